"""`dalle serve` without a browser: field validation, the FIFO queue (one model call at a time, in order, bounded),
progress reporting, reranking, error handling, and the real command on a tiny random-weight checkpoint.

The browser test (tests/test_serve_browser.py) drives the page itself; these pin the API the page relies on.
Slow, stalled and malformed clients against the real server over raw sockets: tests/test_serve_hostile.py.
"""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import base64
import dataclasses
import http.client
import io
import json
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest

from dalle import serve

# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
LIMITS = serve.Limits(max_images=16, max_prompt_chars=50, max_condition_scale=20.0, max_temperature=5.0,
                      image_codes=64)
DEFAULTS = serve.Defaults(n=4, top=2, condition_scale=3.0, top_k=0, temperature=1.0)


def fake_images(prompt: str, n: int, seed: int, size: int = 8) -> np.ndarray:
    """Distinct, reproducible images: image i is a solid colour from (prompt, seed, i)."""
    rng = np.random.default_rng([seed, len(prompt)])
    colours = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy()


class FakeGenerator:
    """Records calls (and each call's image completion: image bytes, keep_rows) and the most calls ever in flight
    at once; can be held at a gate to keep a job running."""

    def __init__(self, gate: threading.Event | None = None, fail: dict[str, Exception] | None = None):
        self.gate = gate
        self.fail = fail or {}
        self.calls: list[tuple] = []
        self.completions: list[tuple[bytes | None, int | None]] = []
        self.active = 0
        self.max_active = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, prompt, n, condition_scale, top_k, temperature, seed, progress, *, image=None,
                 keep_rows=None):
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((prompt, n, condition_scale, top_k, temperature, seed))
            self.completions.append((image, keep_rows))
        try:
            progress(0.5, f"sampling {n} images")
            self.started.set()
            if self.gate is not None:
                assert self.gate.wait(30), "test gate never opened"
            if prompt in self.fail:
                raise self.fail[prompt]
            if prompt.startswith("long"):
                warnings.warn("prompt 1 is longer than the model's 15 text tokens and was truncated")
            return fake_images(prompt, n, seed)
        finally:
            with self._lock:
                self.active -= 1


def request(url: str, body: object = None, *, headers: dict | None = None, raw: bytes | None = None,
            method: str | None = None) -> tuple[int, object]:
    """(status, parsed JSON or raw bytes for PNGs), without raising on HTTP errors."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, ctype, payload = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        status, ctype, payload = e.code, e.headers.get("Content-Type", ""), e.read()
    return status, (json.loads(payload) if ctype.startswith("application/json") else payload)


def fetch(url: str, body: object = None, *, method: str | None = None) -> tuple[int, object, bytes]:
    """(status, headers, raw body), without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def submit(server: serve.Server, **fields) -> dict:
    status, job = request(server.url + "/api/generate", fields)
    assert status == 202, job
    return job


def wait_job(server: serve.Server, job_id: str, until=("done", "error"), timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, job = request(f"{server.url}/api/jobs/{job_id}")
        assert status == 200, job
        if job["status"] in until:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")


def png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def make_server():
    servers = []

    def make(gen, **kw) -> serve.Server:
        kw = {"limits": LIMITS, "defaults": DEFAULTS, "port": 0, **kw}
        s = serve.Server(gen, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        gate = getattr(s.worker.generate_fn, "gate", None)
        if gate is not None:  # a failed test must not leave the worker blocked
            gate.set()
        s.shutdown()


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, field, message", [
    ({}, "prompt", "prompt is empty: describe the image"),
    ({"prompt": "  \n "}, "prompt", "prompt is empty"),
    ({"prompt": 12}, "prompt", "prompt = 12 must be text"),
    ({"prompt": "x" * 51}, "prompt", "prompt is 51 characters long; the limit is 50"),
    ({"prompt": "a", "n": "abc"}, "n", "number of images = 'abc' is not a whole number"),
    ({"prompt": "a", "n": 2.5}, "n", "number of images = 2.5 is not a whole number"),
    ({"prompt": "a", "n": True}, "n", "number of images = True is not a whole number"),
    ({"prompt": "a", "n": 0}, "n", "number of images = 0 must be between 1 and 16"),
    ({"prompt": "a", "n": "17"}, "n", "number of images = 17 must be between 1 and 16"),
    ({"prompt": "a", "n": 4, "top": 5}, "top", "keep best = 5 must be between 0 (keep all) and the number of "
                                               "images (4)"),
    ({"prompt": "a", "condition_scale": "lots"}, "condition_scale", "guidance = 'lots' is not a number"),
    ({"prompt": "a", "condition_scale": "nan"}, "condition_scale", "guidance = 'nan' must be a finite number"),
    ({"prompt": "a", "condition_scale": -1}, "condition_scale", "guidance = -1 must be between 0 and 20"),
    ({"prompt": "a", "top_k": 65}, "top_k", "top-k = 65 must be between 0 (off) and 64"),
    ({"prompt": "a", "temperature": "5.5"}, "temperature", "temperature = 5.5 must be between 0 (greedy) and 5"),
    ({"prompt": "a", "seed": "-3"}, "seed", "seed = -3 must be between 0 and 2147483647"),
    ({"prompt": "a", "seed": "1e3"}, "seed", "seed = '1e3' is not a whole number"),
    ({"prompt": "a", "steps": 3}, "steps", "unknown field 'steps'"),
    (["a red circle"], None, "the request body must be a JSON object"),
])
def test_parse_request_names_the_bad_field_and_value(body, field, message):
    with pytest.raises(serve.FieldError) as e:
        serve.parse_request(body, LIMITS, DEFAULTS, reranking=True)
    assert e.value.field == field
    assert message in str(e.value)


def test_parse_request_reads_form_strings_and_fills_defaults():
    r = serve.parse_request({"prompt": "  a red\n circle ", "n": "6", "top": "", "condition_scale": "2.5",
                             "top_k": " 10 ", "temperature": "0", "seed": "42"}, LIMITS, DEFAULTS, reranking=True)
    assert r == serve.GenerateRequest("a red circle", 6, 2, 2.5, 10, 0.0, 42)
    r = serve.parse_request({"prompt": "a", "top": 0}, LIMITS, DEFAULTS, reranking=True)
    assert (r.n, r.top, r.condition_scale, r.top_k, r.temperature) == (4, 4, 3.0, 0, 1.0)  # top 0 = keep all
    seeds = {serve.parse_request({"prompt": "a", "seed": ""}, LIMITS, DEFAULTS, True, random.Random(i)).seed
             for i in range(5)}
    assert len(seeds) == 5 and all(0 <= s <= serve.MAX_SEED for s in seeds)  # blank seed: a fresh random one


def test_without_reranking_all_images_are_kept_and_top_is_refused():
    r = serve.parse_request({"prompt": "a", "n": 5}, LIMITS, DEFAULTS, reranking=False)
    assert r.top == 5  # the default top (2) only applies with CLIP
    assert serve.parse_request({"prompt": "a", "n": 5, "top": 5}, LIMITS, DEFAULTS, reranking=False).top == 5
    with pytest.raises(serve.FieldError, match=r"keep best = 2 needs CLIP reranking, which is off .*--clip DIR"):
        serve.parse_request({"prompt": "a", "n": 5, "top": 2}, LIMITS, DEFAULTS, reranking=False)


HUGE = "9" * 5000  # over Python's 4300-digit limit for int(str)


@pytest.mark.parametrize("raw, field, fragment", [
    (b"[" * 2000 + b"]" * 2000, None, "it nests 2000 levels deep; the limit is 16"),
    (b'{"prompt": "a", "n": ' + HUGE.encode() + b"}", "n",
     "number of images = 999999999999…(5000 digits) must be between 1 and 16"),
    (b'{"prompt": "a", "seed": "' + HUGE.encode() + b'"}', "seed",
     "seed = 999999999999…(5000 digits) must be between 0 and 2147483647"),
    (b'{"prompt": "a", "top_k": -' + HUGE.encode() + b"}", "top_k",
     "top-k = -99999999999…(5000 digits) must be between 0 (off) and 64"),
    (b'{"prompt": "a", "top": 1e300}', "top", "keep best = 100000000000…(301 digits) must be between 0"),
    (b'{"prompt": "a", "condition_scale": ' + HUGE.encode() + b"}", "condition_scale",
     "guidance = '99999999999999999999999"),
    (b'{"prompt": "a", "n": "' + HUGE.encode() + b'x"}', "n", "is not a whole number"),
    (b'{"prompt": "a", "temperature": NaN}', "temperature", "temperature = nan must be a finite number"),
    (b'{"prompt": "a", "condition_scale": -Infinity}', "condition_scale", "guidance = -inf must be a finite number"),
    (b'{"prompt": "a", "n": Infinity}', "n", "number of images = inf is not a whole number"),
    (b'{"prompt": "a", "seed": true}', "seed", "seed = True is not a whole number"),
    (b'{"prompt": "a", "top_k": false}', "top_k", "top-k = False is not a whole number"),
    (b'{"prompt": "a", "n": [1, 2]}', "n", "number of images = [1, 2] is not a whole number"),
    (b'{"prompt": "a", "temperature": {"t": 1}}', "temperature", "temperature = {'t': 1} is not a number"),
    (b'{"prompt": {"text": [[[["deep"]]]]}}', "prompt", "prompt = {'text': [[...]]} must be text"),
    (b'{"prompt": "\\\\ud800 a"}', None, None),  # an escaped backslash: six plain characters, fine
    (b'{"prompt": "\\ud800 a"}', "prompt", "contains an unpaired surrogate ('\\ud800')"),
    (b'"a red circle"', None, "the request body must be a JSON object"),
    (b"null", None, "the request body must be a JSON object"),
    (b"\xff\xfe{}", None, "not valid JSON: it is not UTF-8 text"),
    (b'{"prompt": "a", "' + b"x" * 10000 + b'": 1}', "x" * 99 + "…", "unknown field 'xxxxxxxx"),
])
def test_hostile_bodies_are_field_errors_with_short_messages(raw, field, fragment):
    """Deep nesting, numbers beyond int()'s digit limit, NaN/Infinity, booleans, wrong types: each a FieldError
    naming the field and (shortened) value, never an exception the server did not expect."""
    if fragment is None:
        assert serve.parse_request(serve.parse_json_body(raw), LIMITS, DEFAULTS, reranking=True).prompt
        return
    with pytest.raises(serve.FieldError) as e:
        serve.parse_request(serve.parse_json_body(raw), LIMITS, DEFAULTS, reranking=True)
    assert e.value.field == field
    assert fragment in str(e.value), str(e.value)
    assert len(str(e.value)) < 300


def test_allowed_host_names():
    from dalle.serve import app

    assert app.allowed_host_names("0.0.0.0", ["demo.lan", "Box.Local:7860", " "]) == {
        "localhost", "127.0.0.1", "[::1]", "demo.lan", "box.local"}  # a wildcard is no name a browser sends
    assert "192.168.1.5" in app.allowed_host_names("192.168.1.5") and "[::1]" in app.allowed_host_names("::1")
    assert [app.host_name(h) for h in ("LOCALHOST:7860", "[::1]:80", "::1", "127.0.0.1", "a.b:x")] == [
        "localhost", "[::1]", "[::1]", "127.0.0.1", "a.b:x"]


# ----------------------------------------------------------------------------------------------------------------
# image completion: the image and keep_rows fields
# ----------------------------------------------------------------------------------------------------------------
COMPLETING = dataclasses.replace(LIMITS, code_rows=4, max_image_bytes=1000)  # keep 1..3 of 4 rows


def picture_png(width: int = 20, height: int = 24, seed: int = 0) -> bytes:
    """A small RGB PNG of noise (every code of its encoding is data, not a flat colour)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize("fields, field, message", [
    ({"image": "aGk="}, "keep_rows", "keep rows is missing: completing an image needs how many of its top code rows "
                                     "to keep (1 to 3 of 4)"),
    ({"keep_rows": 2}, "image", "image is missing: keep rows = 2 needs a picture to complete"),
    ({"image": "  ", "keep_rows": "2"}, "image", "image is missing: keep rows = '2'"),
    ({"image": "aGk=", "keep_rows": 0}, "keep_rows", "keep rows = 0 must be between 1 and 3 (the model's images "
                                                     "are 4 code rows; the rest are drawn)"),
    ({"image": "aGk=", "keep_rows": "4"}, "keep_rows", "keep rows = 4 must be between 1 and 3"),
    ({"image": "aGk=", "keep_rows": 1.5}, "keep_rows", "keep rows = 1.5 is not a whole number"),
    ({"image": "aGk=", "keep_rows": True}, "keep_rows", "keep rows = True is not a whole number"),
    ({"image": 12, "keep_rows": 2}, "image", "image = 12 must be text: the picture as base64 or as a "
                                             "data:image/...;base64, URL"),
    ({"image": "not base64!", "keep_rows": 2}, "image", "image = 'not base64!' is not valid base64"),
    ({"image": "aGk", "keep_rows": 2}, "image", "image = 'aGk' is not valid base64"),  # padding missing
    ({"image": "aGk=\u00e9", "keep_rows": 2}, "image", "is not valid base64"),
    ({"image": "data:image/png;base64,@@@@", "keep_rows": 2}, "image", "is not valid base64"),
    ({"image": "data:image/png,aGk=", "keep_rows": 2}, "image", "image is a data: URL ('data:image/png,') without "
                                                              "';base64'"),
    ({"image": "data:image/png;base64", "keep_rows": 2}, "image", "is a data: URL without a ',' before its data"),
    ({"image": "data:image/png;base64,", "keep_rows": 2}, "image", "image is empty (0 bytes): choose a picture file"),
    ({"image": base64.b64encode(bytes(1001)).decode(), "keep_rows": 2}, "image",
     "image is 1,001 bytes; the limit is 1,000 bytes (0.9766 KiB)"),
    ({"image": data_url(bytes(4000)), "keep_rows": 2}, "image", "image is about 4,000 bytes; the limit is 1,000"),
])
def test_completion_fields_name_the_bad_one(fields, field, message):
    with pytest.raises(serve.FieldError) as e:
        serve.parse_request({"prompt": "a", **fields}, COMPLETING, DEFAULTS, reranking=True)
    assert e.value.field == field
    assert message in str(e.value), str(e.value)
    assert len(str(e.value)) < 300


def test_completion_fields_are_refused_where_completion_is_off():
    assert not LIMITS.completion and COMPLETING.completion
    for fields, field in (({"image": "aGk=", "keep_rows": 2}, "image"), ({"keep_rows": 2}, "keep_rows")):
        with pytest.raises(serve.FieldError, match="image completion is not available on this server") as e:
            serve.parse_request({"prompt": "a", **fields}, LIMITS, DEFAULTS, reranking=True)
        assert e.value.field == field


def test_completion_fields_decode_the_upload_and_keep_it_out_of_the_json():
    png = picture_png()
    wrapped = base64.encodebytes(png).decode()  # 76-character lines, as mail and many tools write base64
    limits = dataclasses.replace(COMPLETING, max_image_bytes=len(png))
    for image in (data_url(png), data_url(png, "application/octet-stream"), " " + data_url(png).upper()[:5] +
                  data_url(png)[5:], wrapped, base64.b64encode(png).decode()):
        r = serve.parse_request({"prompt": "a", "image": image, "keep_rows": "3"}, limits, DEFAULTS, True)
        assert (r.image, r.keep_rows, r.image_bytes, r.completion) == (png, 3, len(png), True)
    out = r.to_json()
    assert "image" not in out and (out["image_bytes"], out["keep_rows"]) == (len(png), 3)
    assert json.dumps(out) and "image=" not in repr(r)  # neither the JSON nor a log line carries the bytes
    plain = serve.parse_request({"prompt": "a", "image": "", "keep_rows": None}, limits, DEFAULTS, True)
    assert (plain.image, plain.keep_rows, plain.completion, plain.to_json()["image_bytes"]) == (None, None, False, 0)


def test_the_body_limit_holds_the_largest_legal_request():
    """The worst case for its size: an upload of max_image_bytes in a data: URL and a prompt of astral characters,
    each escaped by json.dumps as a surrogate pair (12 bytes); it fits max_request_bytes, which fits the body."""
    limits = serve.Limits(code_rows=16)
    body = json.dumps({"prompt": "\U0001f600" * limits.max_prompt_chars, "n": "16", "top": "16",
                       "condition_scale": "20.0", "top_k": "16384", "temperature": "5.0", "seed": "2147483647",
                       "keep_rows": "15", "image": data_url(bytes(limits.max_image_bytes))}).encode()
    assert len(body) <= serve.max_request_bytes(limits) <= serve.MAX_BODY_BYTES
    r = serve.parse_request(serve.parse_json_body(body), limits, DEFAULTS, reranking=True)
    assert r.image_bytes == limits.max_image_bytes
    # A server whose body limit cannot carry such a request refuses to start, naming both limits.
    with pytest.raises(ValueError, match=r"HttpLimits.max_body_bytes = 65536 is too small for image completion.*"
                                         r"Limits.max_image_bytes = 262144"):
        serve.Server(FakeGenerator(), port=0, limits=limits, http=serve.HttpLimits(max_body_bytes=64 * 1024))
    serve.Server(FakeGenerator(), port=0, limits=LIMITS, http=serve.HttpLimits(max_body_bytes=64 * 1024)).close()


# ----------------------------------------------------------------------------------------------------------------
# HTTP API with a fake model
# ----------------------------------------------------------------------------------------------------------------
def test_generate_poll_and_fetch_images(make_server):
    gen = FakeGenerator()
    server = make_server(gen)
    assert server.address[0] == "127.0.0.1"  # loopback unless told otherwise
    status, page = request(server.url + "/")
    assert status == 200 and b'id="prompt"' in page and b'id="generate"' in page and b'id="status"' in page
    assert b"\"reranking\": false" in page and b"http://" not in page and b"https://" not in page  # works offline
    # CSS and JS are package files (the CSP forbids inline script and style); the settings are a JSON data block
    scripts = re.findall(rb"<script[^>]*>", page)
    assert scripts == [b'<script type="application/json" id="config">', b'<script src="/static/app.js">'], scripts
    assert b"style=" not in page and b"<style" not in page and b'href="/static/app.css"' in page
    for asset, kind in (("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")):
        with urllib.request.urlopen(server.url + asset, timeout=30) as r:
            assert r.headers["Content-Type"].startswith(kind) and r.read()

    job = submit(server, prompt="a red circle", n=3, condition_scale="2", top_k=5, temperature=0.5, seed=7)
    assert job["status"] in ("queued", "running") and job["request"]["seed"] == 7
    job = wait_job(server, job["id"])
    assert job["status"] == "done", job
    assert gen.calls == [("a red circle", 3, 2.0, 5, 0.5, 7)]
    res = job["result"]
    assert res["reranked"] is False and res["order"] == [0, 1, 2] and res["seed"] == 7
    assert res["image_size"] == [8, 8] and job["progress"] == 1.0
    expected = fake_images("a red circle", 3, 7)
    for i, url in enumerate(res["images"]):
        status, png = request(server.url + url)
        assert status == 200
        np.testing.assert_array_equal(png_array(png), expected[i])
    status, grid = request(server.url + res["grid"])
    assert status == 200 and png_array(grid).shape == (8 + 4, 3 * 8 + 4 * 2, 3)
    assert request(server.url + res["images"][0].replace("/0.png", "/3.png"))[0] == 404


def test_http_errors_are_json_with_a_message(make_server):
    server = make_server(FakeGenerator())
    status, body = request(server.url + "/api/generate", {"prompt": "", "n": 2})
    assert (status, body["field"]) == (400, "prompt") and "prompt is empty" in body["error"]
    status, body = request(server.url + "/api/generate", {"prompt": "a", "n": 99})
    assert (status, body["field"]) == (400, "n") and body["error"] == "number of images = 99 must be between 1 and 16"
    status, body = request(server.url + "/api/generate", raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = request(server.url + "/api/generate", raw=b"prompt=a", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in body["error"]
    # Announced by Content-Length and refused before the body is read: only the head is sent, since a client still
    # writing half a megabyte when the server closes may see the connection reset before it reads the answer.
    conn = http.client.HTTPConnection(*server.address, timeout=30)
    conn.putrequest("POST", "/api/generate")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(serve.MAX_BODY_BYTES + 1))
    conn.endheaders()
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 413 and f"the limit is {serve.MAX_BODY_BYTES}" in body["error"]
    status, body = request(server.url + "/api/generate", {"prompt": "a"}, headers={"Origin": "http://evil.test"})
    assert status == 403 and "cross-origin" in body["error"]
    status, body = request(server.url + "/api/jobs/nope")
    assert status == 404 and "no job 'nope'" in body["error"]
    assert request(server.url + "/nowhere")[0] == 404
    assert server.worker.queue_length() == 0 and not server.worker._jobs  # nothing bad was queued


def test_every_response_carries_the_security_headers(make_server):
    server = make_server(FakeGenerator())
    job = wait_job(server, submit(server, prompt="a", n=1)["id"])
    for method, path, body, expected in [("GET", "/", None, 200), ("GET", "/static/app.css", None, 200),
                                         ("GET", "/api/info", None, 200), ("GET", job["result"]["grid"], None, 200),
                                         ("GET", "/nowhere", None, 404), ("POST", "/api/generate", {}, 400),
                                         ("PUT", "/api/info", None, 405), ("HEAD", "/", None, 200)]:
        status, headers, _ = fetch(server.url + path, body, method=method)
        assert status == expected, (method, path, status)
        assert headers["Content-Security-Policy"] == serve.CONTENT_SECURITY_POLICY, (method, path)
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        # one deliberate widening: the page previews the picture to complete as a blob: URL; data: stays out
        assert "img-src 'self' blob:;" in headers["Content-Security-Policy"]
        assert "data:" not in headers["Content-Security-Policy"]
        assert (headers["X-Frame-Options"], headers["X-Content-Type-Options"], headers["Referrer-Policy"]) == (
            "DENY", "nosniff", "no-referrer"), (method, path)
    status, headers, body = fetch(server.url + "/api/info", method="DELETE")
    assert status == 405 and headers["Allow"] and json.loads(body) == {
        "error": "method DELETE is not allowed on /api/info (allowed: " + headers["Allow"] + ")", "field": None}


def test_concurrent_requests_queue_in_order_and_never_overlap(make_server):
    gate = threading.Event()
    gen = FakeGenerator(gate)
    server = make_server(gen)
    first = submit(server, prompt="first", n=1, seed=1)
    assert gen.started.wait(10)
    jobs: dict[str, dict] = {}
    barrier = threading.Barrier(2)

    def client(name: str) -> None:
        barrier.wait()
        jobs[name] = submit(server, prompt=name, n=2, seed=2)

    threads = [threading.Thread(target=client, args=(name,)) for name in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    positions = {name: wait_job(server, j["id"], until=("queued",))["position"] for name, j in jobs.items()}
    assert sorted(positions.values()) == [1, 2]  # both wait, behind the running one, in arrival order
    running = wait_job(server, first["id"], until=("running",))
    assert running["stage"] == "sampling 1 images" and running["progress"] == 0.5
    gate.set()
    done = {name: wait_job(server, j["id"]) for name, j in jobs.items()}
    assert all(j["status"] == "done" for j in done.values()), done
    assert wait_job(server, first["id"])["status"] == "done"
    arrival = sorted(positions, key=positions.get)
    assert [c[0] for c in gen.calls] == ["first", *arrival]  # FIFO
    assert gen.max_active == 1  # the model is never called from two threads at once


def test_full_queue_answers_503_and_recovers(make_server):
    gate = threading.Event()
    gen = FakeGenerator(gate)
    server = make_server(gen, max_queue=2)
    running = submit(server, prompt="running", n=1)
    assert gen.started.wait(10)
    waiting = [submit(server, prompt=f"waiting {i}", n=1) for i in range(2)]
    status, body = request(server.url + "/api/generate", {"prompt": "one too many"})
    assert status == 503
    assert body["error"] == "the queue is full (2 requests waiting, the limit is 2); try again in a minute"
    gate.set()
    for job in [running, *waiting]:
        assert wait_job(server, job["id"])["status"] == "done"
    assert wait_job(server, submit(server, prompt="later", n=1)["id"])["status"] == "done"
    assert [c[0] for c in gen.calls] == ["running", "waiting 0", "waiting 1", "later"]


def test_a_failing_request_reports_its_error_and_the_worker_goes_on(make_server, caplog):
    from dalle.generation import GenerationError

    gen = FakeGenerator(fail={"bad": GenerationError("prompt 1 is empty; describe the image"),
                              "odd": ValueError("operands could not be broadcast together"),
                              "boom": RuntimeError("out of memory")})
    server = make_server(gen)
    bad = wait_job(server, submit(server, prompt="bad", n=1)["id"])
    assert (bad["status"], bad["error"], bad["field"]) == ("error", "prompt 1 is empty; describe the image", "prompt")
    assert bad["error_status"] == 400  # the generator's word on the request: the user can fix it
    # A bare ValueError from inside the model is this server's bug, not the user's: 500, logged with its traceback.
    odd = wait_job(server, submit(server, prompt="odd", n=1)["id"])
    assert (odd["status"], odd["field"], odd["error_status"]) == ("error", None, 500)
    assert odd["error"] == "internal error while generating: ValueError: operands could not be broadcast together"
    assert any("job " + odd["id"] + " failed" in r.getMessage() and "Traceback" in r.getMessage()
               for r in caplog.records)
    boom = wait_job(server, submit(server, prompt="boom", n=1)["id"])
    assert boom["status"] == "error" and boom["error"] == "internal error while generating: RuntimeError: out of memory"
    assert boom["error_status"] == 500
    assert request(f"{server.url}/api/jobs/{boom['id']}/grid.png")[0] == 409
    fine = wait_job(server, submit(server, prompt="fine", n=1)["id"])
    assert fine["status"] == "done" and fine["result"]["warnings"] == []
    long = wait_job(server, submit(server, prompt="long " * 8, n=1)["id"])
    assert long["result"]["warnings"] == ["prompt 1 is longer than the model's 15 text tokens and was truncated"]


def test_reranking_keeps_the_best_in_rank_order(make_server):
    seen = []

    def rerank(prompt, images):
        seen.append((prompt, images.shape))
        return np.array([20.0, 10.0, 15.0, 30.0])

    server = make_server(FakeGenerator(), rerank_fn=rerank)
    status, info = request(server.url + "/api/info")
    assert info["reranking"] is True and info["defaults"]["top"] == 2
    job = wait_job(server, submit(server, prompt="a star", n=4, top=2, seed=3)["id"])
    assert seen == [("a star", (4, 8, 8, 3))]
    res = job["result"]
    assert res["reranked"] is True and res["order"] == [3, 0] and len(res["images"]) == 2
    assert res["scores"] == [30.0, 20.0]
    expected = fake_images("a star", 4, 3)
    np.testing.assert_array_equal(png_array(request(server.url + res["images"][0])[1]), expected[3])
    np.testing.assert_array_equal(png_array(request(server.url + res["images"][1])[1]), expected[0])


def test_bad_reranker_output_is_an_error_not_a_crash(make_server):
    server = make_server(FakeGenerator(), rerank_fn=lambda prompt, images: (
        [1.0, float("nan")] if prompt == "a" else np.arange(len(images), dtype=float)))
    job = wait_job(server, submit(server, prompt="a", n=3)["id"])
    assert job["status"] == "error"
    assert "reranker returned scores of shape (2,) (finite: False) for 3 images" in job["error"]
    assert wait_job(server, submit(server, prompt="b", n=2)["id"])["status"] == "done"


def test_clip_scorer_scores_each_image_against_the_prompt():
    class FakeCLIP:  # images embed as their mean colour; a prompt names the colour it is about
        def embed_images(self, images):
            return np.asarray(images, np.float32).mean(axis=(1, 2))

        def embed_texts(self, captions):
            return np.array([[1.0, 0, 0] if "red" in c else [0, 0, 1.0] for c in captions])

    images = np.zeros((3, 4, 4, 3), np.uint8)
    images[0, ..., 2] = 200  # blue
    images[1, ..., 0] = 200  # red
    images[2] = 200  # grey
    scores = serve.clip_scorer(FakeCLIP())("a red circle", images)
    np.testing.assert_allclose(scores, [0.0, 100.0, 100 / np.sqrt(3)], atol=1e-6)


def test_warmup_runs_first_and_requests_wait_for_it(make_server):
    gate = threading.Event()
    order = []

    def warmup():
        order.append("warmup")
        assert gate.wait(10)

    def gen(prompt, n, *args, **completion):
        order.append(prompt)
        return fake_images(prompt, n, 0)

    server = make_server(gen, warmup=warmup)
    assert request(server.url + "/api/info")[1]["ready"] is False
    job = submit(server, prompt="early", n=1)
    assert wait_job(server, job["id"], until=("queued",))["stage"] == "waiting for the model to warm up"
    gate.set()
    assert wait_job(server, job["id"])["status"] == "done"
    assert order == ["warmup", "early"] and request(server.url + "/api/info")[1]["ready"] is True


def test_finished_jobs_are_forgotten_beyond_keep_jobs():
    worker = serve.Worker(lambda p, n, *a, **completion: fake_images(p, n, 0), keep_jobs=2)
    worker.start()
    try:
        req = serve.GenerateRequest("a", 1, 1, 3.0, 0, 1.0, 0)
        ids = []
        for _ in range(4):
            job = worker.submit(req)
            ids.append(job.id)
            deadline = time.time() + 10
            while job.status != "done" and time.time() < deadline:
                time.sleep(0.01)
        assert [worker.get(i) is not None for i in ids] == [False, False, True, True]
    finally:
        worker.stop()


def test_image_completion_through_the_api(make_server):
    """The upload reaches the generate function as its bytes with keep_rows; the job echoes its size, never the
    bytes, says it was a completion, and lets go of the bytes once done; the generator's words about the picture
    or the rows come back on those fields."""
    from dalle.generation import GenerationError

    gen = FakeGenerator(fail={
        "no picture": GenerationError("image of 14 bytes is not an image this program can read (PNG, JPEG)"),
        "rows": GenerationError("keep rows = 3 must be between 1 and 2 (this model's images are 3 code rows)")})
    limits = dataclasses.replace(LIMITS, code_rows=4)
    server = make_server(gen, limits=limits)
    status, info = request(server.url + "/api/info")
    assert info["completion"] is True and info["limits"]["code_rows"] == 4
    assert info["limits"]["max_image_bytes"] == 256 * 1024 and info["fields"]["keep_rows"] == "keep rows"
    page = request(server.url + "/")[1]
    assert b'id="image" name="image" type="file"' in page and b'id="keep_rows"' in page
    assert b'"completion": true' in page  # the page shows the completion inputs only when this says so

    png = picture_png()
    job = submit(server, prompt="a red circle", n=2, seed=4, image=data_url(png), keep_rows=2)
    assert "image" not in job["request"] and job["request"]["image_bytes"] == len(png)
    assert job["request"]["keep_rows"] == 2 and len(json.dumps(job)) < 2000
    done = wait_job(server, job["id"])
    assert done["status"] == "done" and done["result"]["completion"] is True, done
    assert gen.calls[-1] == ("a red circle", 2, 3.0, 0, 1.0, 4) and gen.completions[-1] == (png, 2)
    kept = server.worker.get(job["id"]).request
    assert kept.image is None and (kept.image_bytes, kept.keep_rows) == (len(png), 2)  # bytes released, size kept

    plain = wait_job(server, submit(server, prompt="a red circle", n=1, seed=4)["id"])
    assert plain["result"]["completion"] is False and gen.completions[-1] == (None, None)
    assert (plain["request"]["image_bytes"], plain["request"]["keep_rows"]) == (0, None)

    for prompt, field in (("no picture", "image"), ("rows", "keep_rows")):
        failed = wait_job(server, submit(server, prompt=prompt, n=1, image=data_url(png), keep_rows=1)["id"])
        assert (failed["status"], failed["field"], failed["error_status"]) == ("error", field, 400), failed
    calls = len(gen.calls)
    for fields, field in (({"image": data_url(png)}, "keep_rows"), ({"keep_rows": 1}, "image"),
                          ({"image": "data:image/png;base64,%%%", "keep_rows": 1}, "image"),
                          ({"image": data_url(png), "keep_rows": 4}, "keep_rows"),
                          ({"image": data_url(bytes(limits.max_image_bytes + 1)), "keep_rows": 1}, "image")):
        status, body = request(server.url + "/api/generate", {"prompt": "a", **fields})
        assert (status, body["field"]) == (400, field), body
    assert len(gen.calls) == calls and server.worker.queue_length() == 0  # refused before the queue

    off = make_server(FakeGenerator())  # LIMITS: no code rows, so no completion
    assert request(off.url + "/api/info")[1]["completion"] is False
    status, body = request(off.url + "/api/generate", {"prompt": "a", "image": data_url(png), "keep_rows": 1})
    assert (status, body["field"]) == (400, "image") and "not available" in body["error"]


# ----------------------------------------------------------------------------------------------------------------
# the real command, on a tiny random-weight checkpoint
# ----------------------------------------------------------------------------------------------------------------
CAPTIONS = ["a red circle", "a blue square", "a green star in the center", "a small yellow triangle",
            "a large purple diamond on the left", "an orange cross at the bottom"]


def random_params(init, seed: int):
    """Random weights of the right tree and shapes without running (or compiling) `init`, which on two shared
    cores takes seconds per model: weights N(0, 0.05), biases 0, norm scales 1 (the VQGAN and the CLIP; the
    text-to-image model has its own `model.random_params`)."""
    import jax

    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            return np.ones(s.shape, s.dtype)
        if name in ("b", "bias", "offset"):
            return np.zeros(s.shape, s.dtype)
        return rng.normal(0.0, 0.05, s.shape).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, jax.eval_shape(init, jax.random.PRNGKey(seed)))


def make_tiny_checkpoint(root: str) -> tuple[str, str]:
    """A valid `dalle generate`/`dalle serve` checkpoint in seconds: sentencepiece tokenizer on a few captions,
    random f4 VQGAN (16 px -> 4x4 codes of 32) and a random one-layer decoder-only model; plus a random tiny CLIP
    on the same tokenizer. Returns (model dir, CLIP dir)."""
    from ml_collections import ConfigDict

    from dalle import model_dir as checkpoint
    from dalle import config as config_lib
    from dalle.tokenizers import sentencepiece as tokenizer
    from dalle.modeling.clip import model as clip_lib
    from dalle.modeling.clip import schema as clip_schema
    from dalle.modeling import model as model_lib
    from dalle.modeling import presets
    from dalle.modeling.vqgan import model as vqgan_lib

    tok_path = os.path.join(root, "tok", "spm.model")
    vocab = tokenizer.train_tokenizer(CAPTIONS * 4, tok_path, 48)["vocab_size"]
    vq = config_lib.validate(ConfigDict({"model": dict(
        kind="vqgan", resolution=16, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
        z_channels=8, embed_dim=8, n_embed=32, norm_groups=8)}))
    vq_params = random_params(vqgan_lib.VQGAN(vqgan_lib.VQGANConfig.from_config(vq)).init, 0)
    vq_dir = checkpoint.save_model(os.path.join(root, "vqgan"), vq_params, vq)
    m = presets.tiny_decoder_only(text_vocab_size=vocab, image_vocab_size=32, max_text_length=16, image_length=16)
    m.d_model, m.num_layers, m.num_heads, m.ffn_dim = 32, 1, 2, 64
    params = model_lib.random_params(model_lib.build_model(m), seed=1)
    config = ConfigDict({"model": m, "data": {"tokenizer_path": tok_path, "vqgan_checkpoint": vq_dir,
                                              "source": "shapes"},
                         "sampling": {"examples": ["a red circle", "a small blue square"]}})
    clip_config = clip_schema.clip_defaults()
    clip_config.update(dict(embed_dim=16, image_size=16, patch_size=8, vision_width=32, vision_layers=1,
                            vision_heads=2, vision_mlp_dim=64, context_length=16, vocab_size=vocab, text_width=32,
                            text_layers=1, text_heads=2, text_mlp_dim=64, text_pool="eos", eos_id=1, activation="gelu"))
    clip_dir = checkpoint.save_model(os.path.join(root, "clip"), random_params(clip_lib.CLIP(clip_config).init, 2),
                                     ConfigDict({"model": clip_config}))
    return checkpoint.save_model(os.path.join(root, "dalle"), params, config), clip_dir


def test_dalle_serve_with_a_tiny_real_model_and_clip(tmp_path, monkeypatch):
    """`dalle serve`'s own setup path: loads the model once, warms up, generates reproducible images and reranks
    them with a (random) CLIP exactly as scoring them directly does."""
    from dalle import generation
    from dalle.modeling.clip import model as clip_lib

    ckpt, clip_dir = make_tiny_checkpoint(str(tmp_path))
    loads = []
    original = generation.Generator.from_checkpoint.__func__

    def counted(cls, directory, **kwargs):
        loads.append((directory, kwargs.get("dtype")))
        return original(cls, directory, **kwargs)

    monkeypatch.setattr(generation.Generator, "from_checkpoint", classmethod(counted))
    args = serve._parser().parse_args(["--checkpoint", ckpt, "--clip", clip_dir, "--port", "0", "--n", "3",
                                       "--top", "2", "--max-images", "4"])
    assert args.host == "127.0.0.1"
    server = serve.build_server(args).start()
    try:
        deadline = time.time() + 60
        while not request(server.url + "/api/info")[1]["ready"] and time.time() < deadline:
            time.sleep(0.05)
        info = request(server.url + "/api/info")[1]
        assert info["ready"] and info["limits"]["image_codes"] == 32 and info["reranking"] is True
        assert info["defaults"]["n"] == 3 and info["defaults"]["top"] == 2
        assert "16×16 px" in info["model"]
        assert info["examples"] == ["a red circle", "a small blue square"]  # the model's sampling.examples
        status, body = request(server.url + "/api/generate", {"prompt": "a", "top_k": 33})
        assert status == 400 and body["error"] == "top-k = 33 must be between 0 (off) and 32 (the model's image codes)"
        jobs = [submit(server, prompt="a red circle", n=3, top=t, seed=s) for s, t in ((5, 0), (5, 0), (6, 0), (5, 1))]
        results = [wait_job(server, j["id"]) for j in jobs]
        assert all(r["status"] == "done" for r in results), results
        imgs = [np.stack([png_array(request(server.url + u)[1]) for u in r["result"]["images"]]) for r in results]
        assert imgs[0].shape == (3, 16, 16, 3)
        np.testing.assert_array_equal(imgs[0], imgs[1])  # same seed, same images
        assert not np.array_equal(imgs[0], imgs[2])
        np.testing.assert_array_equal(imgs[3], imgs[0][:1])  # keep best 1 = the first of the full ranking
        res = results[0]["result"]
        assert res["reranked"] and sorted(res["order"]) == [0, 1, 2] and res["scores"] == sorted(res["scores"])[::-1]
        direct = serve.clip_scorer(clip_lib.load_clip(clip_dir, tokenizer_path=os.path.join(
            str(tmp_path), "tok", "spm.model")))("a red circle", imgs[0])
        np.testing.assert_allclose(direct, res["scores"], atol=2e-3)  # the server's scores, in display order
        assert loads == [(ckpt, "float32")]  # loaded once (the default --dtype), for the warm-up and all four requests
    finally:
        server.shutdown()


def test_compiled_samplers_are_bounded_and_an_empty_prompt_is_the_users_error(tmp_path, monkeypatch):
    """Every distinct top-k (0..codebook size) or number of images compiles a sampler; --max-compiled bounds how
    many stay in memory (least recently used dropped, and really freed). And a prompt of zero-width characters,
    which the generator refuses, comes back as the request's error on the prompt field, not the server's."""
    import gc
    import weakref

    from dalle import generation

    ckpt, _ = make_tiny_checkpoint(str(tmp_path))
    gens = []
    original = generation.Generator.from_checkpoint.__func__

    def keep(cls, directory, **kwargs):
        gens.append(original(cls, directory, **kwargs))
        return gens[-1]

    monkeypatch.setattr(generation.Generator, "from_checkpoint", classmethod(keep))
    args = serve._parser().parse_args(["--checkpoint", ckpt, "--clip", "", "--port", "0", "--no-warmup",
                                       "--max-compiled", "2"])
    server = serve.build_server(args).start()
    try:
        job = wait_job(server, submit(server, prompt="\u200b\u200c\u2060 \u200b", n=1)["id"])
        assert (job["status"], job["field"], job["error_status"]) == ("error", "prompt", 400), job
        assert "has no words left after caption cleaning" in job["error"]

        cache = gens[0].model._generate_cache
        oldest = None
        for top_k in (1, 2, 3):
            job = wait_job(server, submit(server, prompt="a red circle", n=1, top_k=top_k, condition_scale=1,
                                          seed=0)["id"])
            assert job["status"] == "done", job
            assert len(cache) <= 2, top_k
            oldest = oldest or weakref.ref(next(iter(cache.values())))
        assert sorted(dict(key[0])["top_k"] for key in cache) == [2, 3]  # the most recently used
        gc.collect()
        assert oldest() is None  # dropped from memory, not only from the dict
    finally:
        server.shutdown()


def test_dalle_serve_completes_an_uploaded_picture(tmp_path, monkeypatch):
    """`dalle serve` on a tiny real model (16 px, 4x4 codes): /api/info offers rows 1..3; an uploaded PNG's top
    rows of codes, as the Generator encodes it on its own, are the first codes of every returned image (which are
    those codes decoded), and another picture with the same seed gives its own; an upload that is no picture and
    rows out of range are the request's errors on their fields."""
    from dalle import generation

    ckpt, _ = make_tiny_checkpoint(str(tmp_path))
    gens, decoded = [], []
    load, decode = generation.Generator.from_checkpoint.__func__, generation.Generator.decode

    def keep(cls, directory, **kwargs):
        gens.append(load(cls, directory, **kwargs))
        return gens[-1]

    def recording(self, codes):
        decoded.append(np.asarray(codes))
        return decode(self, codes)

    monkeypatch.setattr(generation.Generator, "from_checkpoint", classmethod(keep))
    monkeypatch.setattr(generation.Generator, "decode", recording)
    args = serve._parser().parse_args(["--checkpoint", ckpt, "--clip", "", "--port", "0", "--no-warmup"])
    server = serve.build_server(args).start()
    try:
        info = request(server.url + "/api/info")[1]
        assert info["completion"] is True and info["limits"]["code_rows"] == 4 and "in 4 rows" in info["model"]
        pngs = [picture_png(20, 24, seed=1), picture_png(16, 16, seed=2)]
        jobs = [submit(server, prompt="a red circle", n=2, seed=9, top_k=0, image=data_url(png), keep_rows=2)
                for png in pngs]
        done = [wait_job(server, j["id"]) for j in jobs]
        assert [(j["status"], j["result"]["completion"]) for j in done] == [("done", True)] * 2, done
        for png, codes in zip(pngs, decoded):
            expected = gens[0].completion_prompt(png, 2)  # the upload's top 2 rows of 4 codes
            assert expected.shape == (8,) and codes.shape == (2, 16)
            assert (codes[:, :8] == expected).all()
        assert not (decoded[0][:, :8] == decoded[1][:, :8]).all()  # each picture's own rows, not a constant
        shown = np.stack([png_array(request(server.url + u)[1]) for u in done[0]["result"]["images"]])
        np.testing.assert_array_equal(shown, decode(gens[0], decoded[0]))  # the images are those codes, decoded

        failed = wait_job(server, submit(server, prompt="a red circle", n=1, image=data_url(b"just some text"),
                                         keep_rows=1)["id"])
        assert (failed["status"], failed["field"], failed["error_status"]) == ("error", "image", 400), failed
        assert failed["error"] == ("image of 14 bytes is not an image this program can read (PNG, JPEG, WebP, GIF, "
                                   "BMP, TIFF)")
        for rows in (0, 4):
            status, body = request(server.url + "/api/generate", {"prompt": "a", "image": data_url(png),
                                                                  "keep_rows": rows})
            assert (status, body["field"]) == (400, "keep_rows")
            assert body["error"] == (f"keep rows = {rows} must be between 1 and 3 (the model's images are 4 code "
                                     f"rows; the rest are drawn)")
        assert len(gens) == 1 and len(decoded) == 2  # loaded once; the refused requests never decoded anything
    finally:
        server.shutdown()


def test_missing_checkpoint_says_to_run_make_demo(tmp_path, capsys):
    assert serve.main(["--checkpoint", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "make demo" in err


def test_bad_command_line_values_are_refused(capsys):
    assert serve.main(["--port", "70000"]) == 2
    assert "--port = 70000 must be between 0 and 65535" in capsys.readouterr().err
    assert serve.main(["--max-queue", "0"]) == 2
    assert "--max-queue = 0 must be >= 1" in capsys.readouterr().err
    assert serve.main(["--max-compiled", "0"]) == 2
    assert "--max-compiled = 0 must be >= 1" in capsys.readouterr().err


def test_a_model_that_cannot_be_read_is_not_reported_as_a_busy_port(monkeypatch, capsys):
    from dalle import generation

    def unreadable(cls, directory, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(directory, "params.msgpack"))

    monkeypatch.setattr(generation.Generator, "from_checkpoint", classmethod(unreadable))
    assert serve.main(["--checkpoint", "/models/m", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the model from /models/m: [Errno 13] Permission denied: '/models/m/params.msgpack'" in err
    assert "listen" not in err and "--port" not in err


def test_a_port_in_use_is_reported_as_such(monkeypatch, capsys):
    from dalle.serve import command

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(serve.ListenError):
            serve.Server(FakeGenerator(), port=port)
        # the command's own path, past the model (which this test does not need)
        monkeypatch.setattr(command, "build_server", lambda args: serve.Server(FakeGenerator(), host=args.host,
                                                                               port=args.port))
        assert serve.main(["--port", str(port)]) == 2
    assert (f"cannot listen on 127.0.0.1:{port}: Address already in use (pick another with --port)"
            in capsys.readouterr().err)


def test_page_defaults_come_from_the_model_sampling_section_and_flags_override_them(tmp_path):
    from dalle import model_dir as checkpoint

    ckpt, clip_dir = make_tiny_checkpoint(str(tmp_path))
    checkpoint.set_config_section(ckpt, "sampling", dict(guidance=1.5, temperature=0.7, top_k=8, candidates=4,
                                                         keep=1, clip_checkpoint=clip_dir))

    def build(*flags: str) -> serve.Server:
        args = serve._parser().parse_args(["--checkpoint", ckpt, "--port", "0", "--no-warmup", *flags])
        server = serve.build_server(args)
        server.close()  # never started: only its settings are looked at
        return server

    server = build()
    assert server.reranking  # the model's CLIP, without --clip
    assert server.defaults == serve.Defaults(n=4, top=1, condition_scale=1.5, top_k=8, temperature=0.7)
    server = build("--n", "3", "--top", "2", "--condition-scale", "2", "--temperature", "1", "--top-k", "0",
                   "--clip", "")
    assert not server.reranking and server.defaults == serve.Defaults(n=3, top=0, condition_scale=2.0, top_k=0,
                                                                     temperature=1.0)
    with pytest.raises(ValueError, match="--top = 5 must be between 0 .* the model's sampling.candidates = 4"):
        build("--top", "5")
