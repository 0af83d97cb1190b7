"""The demo server: the worker, the starlette application and uvicorn, with the deadlines uvicorn lacks.

uvicorn runs in a thread of its own (`start()`, tests) or in the calling thread (`serve_forever()`, the command);
either way on one asyncio loop, so a slow or stalled client costs a socket and a timer rather than a thread.

Why a protocol subclass (GuardedH11Protocol): uvicorn 0.54's h11 protocol starts its only timer, keep-alive,
when a response completes, and cancels it when any byte arrives. Measured against a bare uvicorn (timeout_keep_alive
= 1 s): a fresh connection that sends nothing, one that sends `GET / HT` and stops, and one that sends a request line
and one header and stops were all still open 4 s later, and stay open for good; so would the 20 such connections
tests/test_serve_hostile.py opens. limit_concurrency does not help: by its code it answers 503 only to requests
that arrive complete. The subclass adds the missing deadlines (request head, slow reader), closes a connection whose
body was not read when its response went out, and answers its refusals in the API's JSON.
"""

from __future__ import annotations

import dataclasses
import http
import logging
import socket
import threading
import time
from typing import Any, Callable, Sequence

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol

from dalle.serve.app import SECURITY_HEADERS, HttpLimits, allowed_host_names, build_app, error_json
from dalle.serve.validation import LABELS, Defaults, Limits
from dalle.serve.worker import GenerateFn, RerankFn, Worker

log = logging.getLogger("dalle.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


class ListenError(OSError):
    """The address could not be bound: the port is in use, the address is not this machine's, or no permission.
    A separate class so the command does not mistake another OSError (a model file it cannot read) for it."""

    def __init__(self, host: str, port: int, error: OSError):
        super().__init__(error.errno, error.strerror or str(error))
        self.host, self.port = host, port


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), bound here so the address is known (port 0: any free one) and a
    port in use fails before anything starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
            sock.bind(address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    except OSError as e:  # socket.gaierror included: a name that is not an address of this machine
        raise ListenError(host, port, e) from e
    return sock


class _Deadline:
    """One pending `loop.call_later` callback that can be re-armed or cancelled (the head and write deadlines)."""

    def __init__(self, loop: Any) -> None:
        self.loop, self.handle = loop, None

    @property
    def armed(self) -> bool:
        return self.handle is not None

    def arm(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.cancel()

        def fire() -> None:
            self.handle = None
            callback()

        self.handle = self.loop.call_later(delay_s, fire)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _Connection(h11.Connection):
    """h11's connection state, remembering why it refused a request (uvicorn answers every refusal with one fixed
    text; the API names the reason)."""

    refusal: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.refusal = e
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus: a deadline for the request line and headers (from the connection's start or
    the previous response's end; 408 and close), a deadline for a client that stops reading a response (the
    connection is dropped), a connection whose request body is still arriving is closed once its response is out
    (the app answered without reading it: 413, 408, a route without a body), and JSON refusals (400/431 for what
    h11 cannot parse, 503 beyond `max_connections`). Subclassed per server with its `http_limits`."""

    http_limits: HttpLimits = HttpLimits()

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: Any = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
        self.limit_concurrency = None  # uvicorn's own check answers text/plain: `_admit` answers JSON instead
        self._app, self.app = self.app, self._admit
        self._head_deadline = _Deadline(self.loop)
        self._write_deadline = _Deadline(self.loop)

    # --- the request head deadline -----------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline.arm(self.http_limits.head_timeout_s, self._head_timeout)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # h11 bounds only an *incomplete* head (h11_max_incomplete_event_size): a 200 KB header section that
            # arrives in one read is parsed whole. Bound the complete one too.
            pending = self.conn.trailing_data[0] + data
            end = pending.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(pending)) > self.http_limits.max_head_bytes:
                self._refuse(431, f"the request line and headers are longer than "
                                  f"{self.http_limits.max_head_bytes} bytes")
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in (or it was refused)
            self._head_deadline.cancel()

    def on_response_complete(self) -> None:
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # Answered before its body was in: what follows on this connection is the rest of that body, which
            # nothing would read under a deadline, so the connection ends here.
            self.transport.close()
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            # The next request's head has the same deadline (keep-alive may end it sooner).
            self._head_deadline.arm(self.http_limits.head_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_deadline.cancel()
        self._write_deadline.cancel()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a request line or headers came, then nothing more
            self._refuse(408, f"the request line and headers did not arrive within "
                              f"{self.http_limits.head_timeout_s:g} s")
        else:  # an idle connection: nothing to answer
            self.transport.close()

    # --- a client that stops reading ----------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if not self._write_deadline.armed:
            self._write_deadline.arm(self.http_limits.write_timeout_s, self._write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_deadline.cancel()

    def _write_timeout(self) -> None:
        log.info("dropping a connection whose client read nothing for %g s", self.http_limits.write_timeout_s)
        self.transport.abort()

    # --- refusals -----------------------------------------------------------------------------------------------
    def handle_events(self) -> None:
        try:
            super().handle_events()
        except Exception:  # input neither h11 nor uvicorn expected: refuse it instead of a silent abort
            log.warning("refusing an unparseable request", exc_info=True)
            if not self.transport.is_closing():
                self._refuse(400, "malformed HTTP request")

    def send_400_response(self, msg: str) -> None:
        refusal = self.conn.refusal
        status = refusal.error_status_hint if refusal is not None else 400
        if status == 431:
            message = f"the request line and headers are longer than {self.http_limits.max_head_bytes} bytes"
        else:
            message = f"malformed HTTP request: {refusal if refusal is not None else msg}"
        self._refuse(status, message)

    def _refuse(self, status: int, message: str) -> None:
        """Answers and closes, writing the bytes itself: h11's state may not allow a response at this point."""
        body = error_json(message)
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(), b"content-type: application/json",
                b"content-length: %d" % len(body), b"connection: close", b"cache-control: no-store"]
        head += [name + b": " + value for name, value in SECURITY_HEADERS]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    async def _admit(self, scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        """503 for requests beyond `max_connections` open connections (or as many requests in progress)."""
        limit = self.http_limits.max_connections
        if len(self.connections) > limit or len(self.tasks) > limit:
            body = error_json(f"the server is busy ({len(self.connections)} connections open, the limit is "
                              f"{limit}); try again in a moment")
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                       (b"connection", b"close"), (b"cache-control", b"no-store"), *SECURITY_HEADERS]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


def protocol_class(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """GuardedH11Protocol with these limits (uvicorn constructs protocols itself, from the class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"http_limits": limits})


class Server:
    """The demo: a worker around `generate_fn`, the starlette application and a uvicorn server on a socket bound
    at construction (`url` is known, a port in use raises ListenError). `start()` serves in the background
    (tests), `serve_forever()` in the foreground (`dalle serve`)."""

    def __init__(self, generate_fn: GenerateFn, *, rerank_fn: RerankFn | None = None, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, limits: Limits = Limits(), defaults: Defaults | None = None,
                 max_queue: int = 8, warmup: Callable[[], Any] | None = None, title: str = "dalle",
                 model_info: str = "", examples: Sequence[str] = (), allowed_hosts: Sequence[str] = (),
                 http: HttpLimits = HttpLimits(), access_log: bool = False):
        self.limits = limits
        defaults = defaults or Defaults()
        self.defaults = dataclasses.replace(defaults, n=min(defaults.n, limits.max_images),
                                            top=defaults.top if rerank_fn is not None else 0)
        self.worker = Worker(generate_fn, rerank_fn, max_queue=max_queue, warmup=warmup)
        self.title = title
        self.model_info = model_info
        self.examples = list(examples)
        self.http = http
        self.allowed_hosts = allowed_host_names(host, allowed_hosts)
        self.asgi_app = build_app(self, http, self.allowed_hosts)
        self.socket = listen_socket(host, port)
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            self.asgi_app, host=host, port=port, http=protocol_class(http), ws="none", lifespan="off",
            interface="asgi3", loop="asyncio", log_config=None, access_log=access_log, proxy_headers=False,
            server_header=False, limit_concurrency=http.max_connections,
            timeout_keep_alive=http.keep_alive_s,  # type: ignore[arg-type]  # seconds; a float is fine
            h11_max_incomplete_event_size=http.max_head_bytes, timeout_graceful_shutdown=3))
        self._thread: threading.Thread | None = None

    @property
    def reranking(self) -> bool:
        return self.worker.rerank_fn is not None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        host, port = self.socket.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def info(self) -> dict[str, Any]:
        return {"title": self.title, "model": self.model_info, "reranking": self.reranking,
                "completion": self.limits.completion,  # image completion: rows 1..limits.code_rows-1 may be kept
                "ready": self.worker.ready, "queue": {"waiting": self.worker.queue_length(),
                                                      "max": self.worker.max_queue},
                "limits": dataclasses.asdict(self.limits), "defaults": dataclasses.asdict(self.defaults),
                "fields": LABELS, "examples": self.examples}

    def start(self, timeout: float = 30.0) -> "Server":
        """Serves in a background thread; returns once the server accepts connections."""
        self.worker.start()
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self.socket]},
                                        name="dalle-serve-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.shutdown()
                raise RuntimeError(f"the HTTP server did not start within {timeout:g} s (see the log)")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serves in this thread until Ctrl-C/SIGTERM (uvicorn finishes the requests in flight, then re-raises
        the signal: KeyboardInterrupt for Ctrl-C)."""
        self.worker.start()
        try:
            self._uvicorn.run(sockets=[self.socket])
        finally:
            self.worker.stop()
            self.close()

    def shutdown(self) -> None:
        if self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(15)
            self._thread = None
        self.close()
        self.worker.stop()

    def close(self) -> None:
        """Releases the listening socket (a server that was built but never started)."""
        self.socket.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
