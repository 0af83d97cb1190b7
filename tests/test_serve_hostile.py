"""`dalle serve` against slow, stalled and malformed clients: the real server (uvicorn on 127.0.0.1) driven over raw
sockets, with timeouts of a second so every deadline is seen to fire.

What each test pins (the hand-written `http.server` demo this replaced failed every one of these: it had no
deadlines at all, parsed chunked bodies as the next request, and answered malformed requests in HTML or not at all):
trickled or stopped request lines, headers and bodies are cut off; 20 stalled connections are all closed; requests
beyond the connection limit get 503; a client that stops reading is dropped; hostile JSON and numbers are 400s
naming the field; only allowed Host names are answered; routes are exact; chunked and oversize bodies are framed
right. After every test the server still answers a normal request.
"""
# bazel: manual  (binds sockets and waits out real timeouts; `make test` runs it with pytest)

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from dalle import serve

TIMEOUT = 1.0  # head, body and keep-alive deadlines of the servers below, in seconds
SLACK = 1.5  # how much later than its deadline a connection may close (two shared CPU cores)
HUGE = "9" * 5000  # over Python's 4300-digit limit for int(str)
LIMITS = serve.Limits(max_images=16, max_prompt_chars=50, image_codes=64)
DEFAULTS = serve.Defaults(n=2, top=0, condition_scale=3.0, top_k=0, temperature=1.0)


def solid_images(prompt: str, n: int, condition_scale: float, top_k: int, temperature: float, seed: int,
                 progress: Callable[[float, str], None], *, image: bytes | None = None,
                 keep_rows: int | None = None) -> np.ndarray:
    colours = np.random.default_rng(seed).integers(0, 256, (n, 3), dtype=np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, 8, 8, 3)).copy()


def http_limits(**kw) -> serve.HttpLimits:
    return serve.HttpLimits(**{"head_timeout_s": TIMEOUT, "body_timeout_s": TIMEOUT, "keep_alive_s": TIMEOUT,
                               "write_timeout_s": TIMEOUT, "max_connections": 32, **kw})


@pytest.fixture
def make_server():
    servers = []

    def make(generate=solid_images, **kw) -> serve.Server:
        kw = {"limits": LIMITS, "defaults": DEFAULTS, "port": 0, "http": http_limits(), **kw}
        servers.append(serve.Server(generate, **kw).start())
        return servers[-1]

    yield make
    try:
        for s in servers:  # whatever a test did to it, the server still answers
            status, _, body = exchange(s, request_bytes("GET", "/api/info"), timeout=10)
            assert status == 200 and json.loads(body)["title"] == "dalle"
    finally:
        for s in servers:
            s.shutdown()


@pytest.fixture
def server(make_server) -> serve.Server:
    return make_server()


# ----------------------------------------------------------------------------------------------------------------
# raw HTTP over sockets, every wait bounded
# ----------------------------------------------------------------------------------------------------------------
def connect(server: serve.Server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(server.address)
    return sock


def request_bytes(method: str, path: str, body: bytes | None = None, *, host: str | None = "127.0.0.1",
                  headers: dict[str, str] | None = None, version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except socket.timeout:
        raise AssertionError("no answer in time") from None
    except ConnectionResetError:
        return b""


def read_response(sock: socket.socket, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names), body (Content-Length long)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock, deadline)
        assert chunk, f"the connection closed before a whole response: {buf[:300]!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = _recv(sock, deadline)
        assert chunk, "the connection closed inside a response body"
        body += chunk
    return int(lines[0].split()[1]), headers, body[:length]


def exchange(server: serve.Server, raw: bytes, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    with connect(server) as sock:
        sock.sendall(raw)
        return read_response(sock, timeout)


def closed_within(sock: socket.socket, seconds: float, pieces: Iterator[bytes] = iter(()),
                  every: float = 0.2) -> tuple[float, bytes]:
    """Sends the next of `pieces` every `every` s (a trickling client) until the server closes the connection;
    returns (seconds it took, what the server sent). Fails if it is still open after `seconds`."""
    start = time.monotonic()
    data = b""
    while time.monotonic() - start < seconds:
        piece = next(pieces, None)
        if piece is not None:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, data
        sock.settimeout(every)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start, data
        if not chunk:
            return time.monotonic() - start, data
        data += chunk
    raise AssertionError(f"the connection is still open after {seconds} s (the server sent {data[:300]!r})")


def error_of(data: bytes) -> tuple[int, dict]:
    """(status, JSON body) of one raw error response, checking it is the API's JSON with the security headers."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json", headers
    assert headers["content-security-policy"] == serve.CONTENT_SECURITY_POLICY
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    error = json.loads(body)
    assert set(error) == {"error", "field"}, error
    return int(lines[0].split()[1]), error


def repeat(piece: bytes) -> Iterator[bytes]:
    return iter([piece] * 1000)


# ----------------------------------------------------------------------------------------------------------------
# slow and stalled clients
# ----------------------------------------------------------------------------------------------------------------
def test_a_trickled_request_line_is_cut_off(server):
    with connect(server) as sock:
        seconds, data = closed_within(sock, TIMEOUT + SLACK, iter([b"GET /api/info?"] + [b"a"] * 1000))
    assert seconds >= TIMEOUT * 0.9
    status, error = error_of(data)
    assert (status, error["error"]) == (408, "the request line and headers did not arrive within 1 s")


def test_trickled_headers_are_cut_off(server):
    with connect(server) as sock:
        first = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        seconds, data = closed_within(sock, TIMEOUT + SLACK, iter([first] + [b"X-Slow: a\r\n"] * 1000))
    assert error_of(data)[0] == 408


def test_a_trickled_or_stopped_body_is_cut_off(server):
    head = (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with connect(server) as trickling, connect(server) as stopped:
        stopped.sendall(head + b'{"prompt": "a')
        seconds, data = closed_within(trickling, TIMEOUT + SLACK, iter([head + b'{"prompt": "a'] + [b" "] * 1000))
        status, error = error_of(data)
        assert status == 408 and error["error"].startswith("the request body did not arrive within 1 s"), error
        _, data = closed_within(stopped, SLACK)
        assert error_of(data)[0] == 408
    assert server.worker.queue_length() == 0


def test_twenty_stalled_connections_are_all_closed(server):
    """Silent, half a request line, half the headers, half a body: five of each, all open at once."""
    starts = [b"", b"GET /api/in", b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: b",
              b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              b"Content-Length: 50\r\n\r\n{"]
    socks = [connect(server) for _ in range(20)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(starts[i % 4])
        deadline = time.monotonic() + TIMEOUT + SLACK
        for sock in socks:  # they all close at about the same time: one shared deadline
            closed_within(sock, max(0.05, deadline - time.monotonic()))
    finally:
        for sock in socks:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(server):
    with connect(server) as sock:
        sock.sendall(request_bytes("GET", "/api/info"))
        assert read_response(sock)[0] == 200
        seconds, data = closed_within(sock, TIMEOUT + SLACK)
    assert data == b""  # nothing to answer: an idle connection just ends


def test_requests_beyond_max_connections_get_503(make_server):
    server = make_server(http=http_limits(max_connections=3, keep_alive_s=10))
    held = [connect(server) for _ in range(3)]
    try:
        for sock in held:  # one answered request each: the server has surely accepted them, and they stay open
            sock.sendall(request_bytes("GET", "/api/info"))
            assert read_response(sock)[0] == 200
        status, headers, body = exchange(server, request_bytes("GET", "/api/info"))
        assert status == 503 and headers["connection"] == "close"
        assert headers["content-security-policy"] == serve.CONTENT_SECURITY_POLICY
        assert json.loads(body)["error"].startswith("the server is busy (4 connections open, the limit is 3)")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while exchange(server, request_bytes("GET", "/api/info"))[0] != 200:  # the slots free up as they close
        assert time.monotonic() < deadline, "still busy after the other connections closed"
        time.sleep(0.05)


def test_a_client_that_stops_reading_is_dropped(make_server):
    """A 12 MB grid (noise does not compress) to a client with an 8 KB window that reads nothing: more than the
    kernel buffers, so the server's writes stall, and the connection is dropped after write_timeout_s."""
    def noise(prompt: str, n: int, *args: Any, **completion: Any) -> np.ndarray:
        return np.random.default_rng(0).integers(0, 256, (n, 512, 512, 3), dtype=np.uint8)

    server = make_server(noise)
    status, _, body = exchange(server, request_bytes("POST", "/api/generate", json.dumps(
        {"prompt": "noise", "n": 16}).encode()))
    assert status == 202
    job_id = json.loads(body)["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = json.loads(exchange(server, request_bytes("GET", f"/api/jobs/{job_id}"))[2])
        if job["status"] != "queued" and job["status"] != "running":
            break
        time.sleep(0.05)
    assert job["status"] == "done", job
    with connect(server, rcvbuf=4096) as sock:
        sock.sendall(request_bytes("GET", f"/api/jobs/{job_id}/grid.png"))
        time.sleep(TIMEOUT + SLACK)  # reading nothing
        received, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:  # now read what is left: far less than the grid, then the end
            chunk = _recv(sock, deadline)
            if not chunk:
                break
            received += len(chunk)
        assert time.monotonic() < deadline, "the connection was never closed"
    assert received < 12_000_000, received


# ----------------------------------------------------------------------------------------------------------------
# malformed requests
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, status, fragment", [
    (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
    (b"GET / HTTP/1.1\r\n\r\n", 400, "Host"),  # HTTP/1.1 requires one
    (b"GET /\x01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "malformed HTTP request"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "longer than 16384 bytes"),
    (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + HUGE.encode() + b"\r\n\r\n", 400,
     "malformed HTTP request"),
    (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400,
     "malformed HTTP request"),
])
def test_malformed_requests_get_a_json_refusal_and_the_connection_closes(server, raw, status, fragment):
    with connect(server) as sock:
        sock.sendall(raw)
        _, data = closed_within(sock, SLACK)
    got, error = error_of(data)
    assert got == status and fragment in error["error"], error


def bodies() -> list[tuple[bytes, str | None, str]]:
    out = [(b"[" * 2000 + b"]" * 2000, None, "nests 2000 levels deep"),
           (b'{"prompt": "a", "n": NaN}', "n", "number of images = nan is not a whole number"),
           (b'{"prompt": "a", "temperature": Infinity}', "temperature", "must be a finite number"),
           (b'{"prompt": "a", "seed": false}', "seed", "seed = False is not a whole number"),
           (b'{"prompt": ["a"]}', "prompt", "prompt = ['a'] must be text"),
           (b'[{"prompt": "a"}]', None, "the request body must be a JSON object")]
    for field, label in (("n", "number of images"), ("seed", "seed"), ("top_k", "top-k")):
        out.append((b'{"prompt": "a", "%s": %s}' % (field.encode(), HUGE.encode()), field,
                    f"{label} = 999999999999…(5000 digits) must be between"))
        out.append((b'{"prompt": "a", "%s": "-%s"}' % (field.encode(), HUGE.encode()), field,
                    f"{label} = -99999999999…(5000 digits) must be between"))
    return out


@pytest.mark.parametrize("body, field, fragment", bodies())
def test_hostile_json_is_a_400_naming_the_field(server, body, field, fragment):
    status, headers, raw = exchange(server, request_bytes("POST", "/api/generate", body))
    error = json.loads(raw)
    assert (status, error["field"]) == (400, field) and fragment in error["error"], error
    assert len(error["error"]) < 300  # the 5000 digits are not echoed
    assert server.worker.queue_length() == 0


def test_only_allowed_host_names_are_answered(make_server):
    server = make_server(allowed_hosts=["demo.lan"])
    port = server.address[1]
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}", "demo.lan",
                 f"DEMO.LAN:{port}"):
        assert exchange(server, request_bytes("GET", "/api/info", host=host))[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil.example", "[::2]"):
        status, headers, body = exchange(server, request_bytes("GET", "/api/info", host=host))
        error = json.loads(body)
        assert status == 400 and error["error"].startswith(f"host '{host}' is not allowed"), error
        assert headers["content-security-policy"] == serve.CONTENT_SECURITY_POLICY
    status, _, body = exchange(server, request_bytes("POST", "/api/generate", b'{"prompt": "a"}', host="evil.example"))
    assert status == 400 and server.worker.queue_length() == 0 and not server.worker._jobs  # nothing was queued
    status, _, body = exchange(server, request_bytes("GET", "/api/info", host=None, version="HTTP/1.0"))
    assert status == 400 and "0 Host headers" in json.loads(body)["error"]


def test_routes_are_exact_and_other_methods_are_405(server):
    status, _, body = exchange(server, request_bytes("POST", "/api/generate", b'{"prompt": "a", "n": 1}'))
    job_id = json.loads(body)["id"]
    deadline = time.monotonic() + 30
    while json.loads(exchange(server, request_bytes("GET", f"/api/jobs/{job_id}"))[2])["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    base = f"/api/jobs/{job_id}"
    assert exchange(server, request_bytes("GET", f"{base}/images/0.png"))[0] == 200
    for path in (f"{base}/images/0.png/extra", f"{base}/grid.pngX", f"{base}/grid.png/", f"{base}/", "/api/info/",
                 f"{base}/images/0.pngX", f"{base}/images/{HUGE}.png", f"{base}/images/%D9%A3.png", f"{base}/images/-1.png", "/static/", "/static/../serve/app.py"):
        status, headers, body = exchange(server, request_bytes("GET", path))
        assert status == 404, (path, status)
        assert len(json.loads(body)["error"]) < 300
    for method, path in (("BREW", "/"), ("DELETE", base), ("POST", "/api/info"), ("PUT", f"{base}/grid.png"),
                         ("GET", "/api/generate")):
        status, headers, body = exchange(server, request_bytes(method, path))
        assert status == 405 and json.loads(body)["error"].startswith(f"method {method} is not allowed"), body


# ----------------------------------------------------------------------------------------------------------------
# body framing
# ----------------------------------------------------------------------------------------------------------------
def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_a_chunked_body_is_read_as_one_body(server):
    head = (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with connect(server) as sock:
        sock.sendall(head + chunked(b'{"prompt": "a ', b'red circle", ', b'"n": 1, "seed": 5}'))
        status, _, body = read_response(sock)
        assert status == 202, body
        assert json.loads(body)["request"]["prompt"] == "a red circle"
        sock.sendall(request_bytes("GET", "/api/info"))  # the same connection: the chunks were not a request
        assert read_response(sock)[0] == 200


def test_an_oversize_body_is_413_naming_the_limit(server):
    limit = serve.MAX_BODY_BYTES
    for length in (limit + 1, 10 * limit):  # by Content-Length, before any of it is sent
        with connect(server) as sock:
            sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % length)
            _, data = closed_within(sock, SLACK)
        status, error = error_of(data)
        assert status == 413 and error["error"] == f"request body is {length} bytes; the limit is {limit}"
    with connect(server) as sock:  # chunked: counted while reading; the chunks stop short of their terminator
        sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*[b" " * 8192] * (limit // 8192 + 1))[:-5])
        _, data = closed_within(sock, SLACK)
    status, error = error_of(data)
    assert status == 413 and f"the limit is {limit}" in error["error"]
    assert server.worker.queue_length() == 0


def test_the_largest_upload_fits_the_body_limit_and_one_byte_more_is_413(make_server):
    """An image completion with an upload of Limits.max_image_bytes, padded with (legal) JSON whitespace to exactly
    MAX_BODY_BYTES, is accepted; the same body one byte longer is refused, also when it comes in chunks."""
    limits = serve.Limits(max_images=16, max_prompt_chars=50, image_codes=64, code_rows=4)
    server = make_server(limits=limits)
    limit, upload = serve.MAX_BODY_BYTES, np.random.default_rng(0).bytes(limits.max_image_bytes)
    fields = json.dumps({"prompt": "a red circle", "n": 1, "keep_rows": 2,
                         "image": "data:image/png;base64," + base64.b64encode(upload).decode()}).encode()
    assert len(fields) < limit
    body = fields + b" " * (limit - len(fields))
    status, _, raw = exchange(server, request_bytes("POST", "/api/generate", body))
    job = json.loads(raw)
    assert status == 202, job
    assert (job["request"]["image_bytes"], job["request"]["keep_rows"]) == (limits.max_image_bytes, 2)
    assert "image" not in job["request"] and len(raw) < 2000  # the upload is not echoed
    head = (b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with connect(server) as sock:
        pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)] + [b" "]
        sock.sendall(head + chunked(*pieces)[:-5])  # no terminator: nothing is left unread when it is refused
        _, data = closed_within(sock, SLACK + TIMEOUT)
    status, error = error_of(data)
    assert status == 413 and error["error"] == (f"request body is over {limit} bytes (it came in chunks); the limit "
                                                f"is {limit}"), error
    deadline = time.monotonic() + 30  # the accepted one runs; the refused one never queued
    while json.loads(exchange(server, request_bytes("GET", f"/api/jobs/{job['id']}"))[2])["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.worker.queue_length() == 0 and len(server.worker._jobs) == 1
