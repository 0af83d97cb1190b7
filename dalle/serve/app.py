"""The demo's ASGI application (starlette): exact routes, JSON errors, the Host allow-list, security headers on
every response, and a request body read under a size limit and a deadline.

The limits a client meets before the application runs (connection count, request-line/header deadline, idle
keep-alive, a client that stops reading) are enforced by the HTTP protocol in dalle/serve/server.py; both read
their numbers from one `HttpLimits`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import importlib.resources
import ipaddress
import json
import re
import urllib.parse
from typing import Any, Iterable, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dalle.serve.validation import (Defaults, FieldError, Limits, clip, max_request_bytes, parse_json_body,
                                    parse_request, show)
from dalle.serve.worker import QueueFull, Worker

# Room for an image completion's upload (Limits.max_image_bytes = 256 KiB, a third more as base64) and the other
# fields; `build_app` refuses limits under which a legal upload would not fit.
MAX_BODY_BYTES = 512 * 1024


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """How much time and data one client may take. Each bound stops one way a single client (slow, stalled or
    hostile) could hold the server's connections or memory; the defaults leave a browser on a slow link room."""

    max_body_bytes: int = MAX_BODY_BYTES  # POST body; larger is 413, checked on Content-Length and while reading
    head_timeout_s: float = 10.0  # request line + headers must be complete this long after the connection opens
    # (or the previous response ends); else 408 and the connection is closed
    body_timeout_s: float = 10.0  # the whole body must arrive this long after the headers; else 408 and close
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this (uvicorn's timeout_keep_alive)
    write_timeout_s: float = 30.0  # a client that stops reading a response is dropped after this
    max_connections: int = 64  # requests on connections beyond this many open ones get 503 (limit_concurrency)
    max_head_bytes: int = 16 * 1024  # request line + headers (h11_max_incomplete_event_size); larger is 431

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not value > 0:
                raise ValueError(f"HttpLimits.{name} = {value!r} must be > 0")


# Every response: nothing from other origins (the page's CSS and JS are files of this package, so no inline
# script or style is needed), never framed (clickjacking), no MIME sniffing, no Referer leaking the job URLs.
# One addition to 'self': images may be blob: URLs, which is how the page shows the picture chosen for a completion
# (URL.createObjectURL of the file) without sending it anywhere. A blob: URL can only be made by script already
# running in the page, so it lets nothing in from outside; data: stays refused, as nothing here needs it.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob:; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'; object-src 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_OURS = {name for name, _ in SECURITY_HEADERS}


def error_json(message: str, field: str | None = None) -> bytes:
    """The body of every error: `{"error": message, "field": name-or-null}`."""
    return json.dumps({"error": message, "field": field}).encode()


# ----------------------------------------------------------------------------------------------------------------
# Host allow-list
# ----------------------------------------------------------------------------------------------------------------
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_name(value: str) -> str:
    """A Host header or --host/--allowed-host value without its port, lower case; IPv6 literals in brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    try:
        if ipaddress.ip_address(value).version == 6:  # a bare IPv6 address, as --host takes it
            return f"[{value}]"
    except ValueError:
        pass
    name, sep, port = value.rpartition(":")
    return name if sep and port.isdigit() else value


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host header values (ports aside) this server answers: loopback names, the address it listens on (not
    a wildcard such as 0.0.0.0, which no browser sends), and the --allowed-host names."""
    names = set(LOOPBACK_NAMES)
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        wildcard = False
    if host and not wildcard:
        names.add(host_name(host))
    names.update(host_name(h) for h in extra if h.strip())
    return frozenset(names)


# ----------------------------------------------------------------------------------------------------------------
# The outermost layer: Host check and security headers, around everything starlette answers (errors included)
# ----------------------------------------------------------------------------------------------------------------
class Guard:
    """Answers 400 to a Host that is not allowed (a DNS-rebinding page reaches 127.0.0.1 under its own name, so
    the name is what tells it apart) and adds the security headers, and a no-store Cache-Control where the
    response sets none, to every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str]):
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers + list(SECURITY_HEADERS)}
            await send(message)

        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        problem = None
        if len(hosts) != 1:
            problem = f"the request has {len(hosts)} Host headers; it needs exactly one"
        elif host_name(hosts[0]) not in self.allowed_hosts:
            problem = (f"host {show(hosts[0])} is not allowed: this server answers "
                       f"{', '.join(sorted(self.allowed_hosts))} (start `dalle serve` with --allowed-host "
                       f"{clip(host_name(hosts[0]), 60)} to add it)")
        if problem is not None:
            response = Response(error_json(problem), 400, media_type="application/json",
                                headers={"Connection": "close"})
            return await response(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------
@functools.cache
def static_file(name: str) -> bytes:
    """A file of dalle/serve/static (package data: `pip install` ships it)."""
    return (importlib.resources.files("dalle.serve") / "static" / name).read_bytes()


STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


class Site(Protocol):
    """What the application serves (dalle.serve.server.Server)."""

    title: str
    limits: Limits
    defaults: Defaults
    worker: Worker

    @property
    def reranking(self) -> bool: ...

    def info(self) -> dict[str, Any]: ...


def render_page(site: Site) -> str:
    """index.html with the title and the settings filled in. The settings travel as a JSON data block, which is
    never executed, so the Content-Security-Policy can refuse every inline script."""
    config = json.dumps(site.info()).replace("<", "\\u003c")  # no "</script>" inside the data block
    return (static_file("index.html").decode("utf-8").replace("__TITLE__", html.escape(site.title))
            .replace("__CONFIG__", config))


# ----------------------------------------------------------------------------------------------------------------
# The routes
# ----------------------------------------------------------------------------------------------------------------
class HttpError(Exception):
    """An error answer from inside a route: status, message, field, and whether the connection must close (its
    body was not read to the end, so the next bytes on it are not a request)."""

    def __init__(self, status: int, message: str, field: str | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.field, self.close = status, message, field, close


def json_error(status: int, message: str, field: str | None = None, close: bool = False,
               headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    return Response(error_json(message, field), status, media_type="application/json", headers=headers)


async def read_body(request: Request, limits: HttpLimits) -> bytes:
    """The request body, at most `max_body_bytes` of it (413 otherwise: by Content-Length before reading, or
    counted while reading a chunked one), all of it within `body_timeout_s` (408 otherwise)."""
    limit = limits.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and (len(length) > 18 or int(length) > limit):  # h11 checked it is digits
        raise HttpError(413, f"request body is {clip(length, 24)} bytes; the limit is {limit}", close=True)
    chunks: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body is over {limit} bytes (it came in chunks); the limit is "
                                     f"{limit}", close=True)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s "
                             f"({size} bytes came)", close=True) from None
    return b"".join(chunks)


def build_app(site: Site, limits: HttpLimits, allowed_hosts: frozenset[str]) -> ASGIApp:
    """The ASGI application for `site`: starlette routes inside the Host/header Guard. Raises ValueError when
    `site` takes image completions whose legal uploads would not fit in `limits.max_body_bytes`."""
    needed = max_request_bytes(site.limits)
    if site.limits.completion and limits.max_body_bytes < needed:
        raise ValueError(f"HttpLimits.max_body_bytes = {limits.max_body_bytes} is too small for image completion: "
                         f"a request with an image of Limits.max_image_bytes = {site.limits.max_image_bytes} "
                         f"can take {needed} bytes")

    def page_response(body: bytes, content_type: str, cache: str = "no-cache") -> Response:
        return Response(body, media_type=content_type, headers={"Cache-Control": cache})

    async def page(request: Request) -> Response:
        return page_response(render_page(site).encode(), "text/html; charset=utf-8", "no-store")

    async def static(request: Request) -> Response:
        name = request.url.path.rsplit("/", 1)[1]
        return page_response(static_file(name), STATIC[name])

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def info(request: Request) -> Response:
        return JSONResponse(site.info())

    async def generate(request: Request) -> Response:
        raw = await read_body(request, limits)  # first, so a refused request leaves the connection usable
        origin = request.headers.get("origin")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
            # Another site's page must not spend this machine's accelerator (the server may be on a LAN).
            return json_error(403, f"cross-origin request from {clip(origin, 100)} refused")
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return json_error(415, f"send the fields as JSON (Content-Type: application/json), not "
                                   f"{show(ctype)}")
        try:
            job = site.worker.submit(parse_request(parse_json_body(raw), site.limits, site.defaults,
                                                   site.reranking))
        except FieldError as e:
            return json_error(400, str(e), e.field)
        except QueueFull as e:
            return json_error(503, str(e))
        return JSONResponse(site.worker.describe(job), 202)

    def find_job(request: Request) -> Any:
        job_id = request.path_params["job_id"]
        job = site.worker.get(job_id)
        if job is None:
            raise HttpError(404, f"no job {show(job_id)} (finished jobs are forgotten after a while)")
        return job

    def finished_job(request: Request) -> Any:
        job = find_job(request)
        if job.status != "done":
            raise HttpError(409, f"job {job.id} is {job.status}; its images are not ready")
        return job

    async def job_status(request: Request) -> Response:
        return JSONResponse(site.worker.describe(find_job(request)))

    def png(data: bytes) -> Response:
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    async def grid(request: Request) -> Response:
        return png(finished_job(request).grid_png or b"")

    async def image(request: Request) -> Response:
        job = finished_job(request)
        index = request.path_params["index"]
        # Digits only, and few of them: int() of a 5000-digit path segment would raise rather than answer 404.
        i = int(index) if re.fullmatch(r"[0-9]{1,6}", index) else None
        if i is None or i >= len(job.images_png):
            raise HttpError(404, f"job {job.id} has {len(job.images_png)} images; there is no image {show(index)}")
        return png(job.images_png[i])

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return json_error(exc.status, exc.message, exc.field, exc.close)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = clip(request.url.path, 100)
        if exc.status_code == 404:
            message = (f"no such page: {path}" if request.method in ("GET", "HEAD") else
                       f"no such endpoint: {clip(request.method, 20)} {path}")
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {clip(request.method, 20)} is not allowed on {path} (allowed: {allowed})"
        else:
            message = f"{exc.status_code}: {exc.detail}"
        return json_error(exc.status_code, message, headers=dict(exc.headers or {}))

    async def on_disconnect(request: Request, exc: Exception) -> Response:
        return Response(status_code=400)  # never sent: the client is gone; the route simply ends

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs nothing itself; uvicorn logs the traceback when the exception reaches it.
        return json_error(500, f"internal server error ({type(exc).__name__}); the server log has the details")

    get = ["GET"]  # HEAD comes with GET
    routes = [
        Route("/", page, methods=get),
        Route("/index.html", page, methods=get),
        Route("/static/app.js", static, methods=get),
        Route("/static/app.css", static, methods=get),
        Route("/favicon.ico", favicon, methods=get),
        Route("/api/info", info, methods=get),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/jobs/{job_id}", job_status, methods=get),
        Route("/api/jobs/{job_id}/grid.png", grid, methods=get),
        Route("/api/jobs/{job_id}/images/{index}.png", image, methods=get),
    ]
    app = Starlette(routes=routes, exception_handlers={
        HttpError: on_http_error, HTTPException: on_starlette_error, ClientDisconnect: on_disconnect,
        Exception: on_crash})
    app.router.redirect_slashes = False  # "/api/info/" is not "/api/info": routes are exact, no redirects
    return Guard(app, allowed_hosts)


__all__ = ["MAX_BODY_BYTES", "HttpLimits", "SECURITY_HEADERS", "CONTENT_SECURITY_POLICY", "LOOPBACK_NAMES",
           "allowed_host_names", "build_app", "error_json", "host_name", "render_page", "static_file"]
