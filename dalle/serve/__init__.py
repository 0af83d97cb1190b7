"""`dalle serve`: the web demo, one page on 127.0.0.1 that turns a prompt, and optionally the top rows of a picture
to complete, into a (CLIP-reranked) grid of images.

    dalle serve                                    # outputs/demo/dalle (what `make demo` writes), port 7860
    dalle serve --checkpoint runs/mini --clip clip_dir --host 127.0.0.1 --port 7860 [--allowed-host NAME ...]

Why starlette + uvicorn (and not `http.server`, which this used before, or gradio): the demo must run offline,
start fast and stay small, which rules out gradio; but a hand-written `http.server` handler spends a thread per
connection, has no deadline for a client that trickles or stalls, and parses HTTP itself, so every malformed input
was one more of our own bugs. uvicorn (with h11) parses HTTP/1.1, chunked bodies included, on one asyncio loop, and
starlette routes exactly; what they lack for a server that a hostile page or client can reach is added here (see
dalle/serve/server.py). The page is three files in dalle/serve/static (package data), no CDN.

API (every error is JSON `{"error": message, "field": name-or-null}`, messages name the field and its value):
    GET  /                              the page (/static/app.js, /static/app.css)
    GET  /api/info                      model, reranking on/off, completion on/off, limits (code_rows,
                                        max_image_bytes, ...), defaults, queue length, ready
    POST /api/generate                  {"prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed",
                                         "image", "keep_rows"}
                                        -> 202 {"id", "status": "queued", "position"} | 400 (bad field) | 503 (full)
                                        image + keep_rows (both or neither): image completion, the top keep_rows
                                        (1..code_rows-1) code rows of the picture kept, the rest drawn; image is
                                        base64 or a data:image/...;base64, URL of at most 256 KiB of file
    GET  /api/jobs/<id>                 status (queued/running/done/error), position, stage, progress, eta, result
                                        (result.completion: an image was completed); the request echoes the
                                        upload as image_bytes, never its bytes; an error has "error", "field" and
                                        "error_status" (400: the request, e.g. a prompt with no words left after
                                        caption cleaning or an upload that is no picture; 500: this server)
    GET  /api/jobs/<id>/images/<i>.png  one image of a finished job (best first when reranked)
    GET  /api/jobs/<id>/grid.png        all of them as one grid
Routes are exact (no trailing-slash redirects, nothing after `.png`); another method on a route is 405.

Hardening (dalle.serve.app.HttpLimits; `Server(http=HttpLimits(...))`):
    Host           only localhost, 127.0.0.1, [::1], the --host address and --allowed-host names (any port);
                   any other Host is 400 (a DNS-rebinding page reaches 127.0.0.1 under its own name)
    headers        every response: Content-Security-Policy default-src 'self' (no inline script or style;
                   img-src adds blob:, for the page's preview of the picture to complete),
                   X-Frame-Options DENY, X-Content-Type-Options nosniff, Referrer-Policy no-referrer
    head_timeout_s 10 s for the request line and headers (from connect, or the previous response): 408, closed
    body_timeout_s 10 s for the whole body: 408, closed
    keep_alive_s   5 s idle between requests
    write_timeout_s 30 s for a client that stops reading a response: dropped
    max_body_bytes 512 KiB (Content-Length or counted while reading a chunked body): 413, closed; room for
                   an image completion's upload (Limits.max_image_bytes, 256 KiB) as base64
    max_head_bytes 16 KiB of request line and headers: 431
    max_connections 64 open connections; requests on more get 503
    JSON           nested at most 16 deep; numbers longer than 30 digits, NaN, Infinity, booleans, wrong types:
                   400 naming the field; values in messages are shortened
    compilation    each distinct (number of images, top-k) compiles a sampler: at most --max-compiled (8) are
                   kept, least recently used dropped (dalle.modeling.sampling.limit_compiled)

Design: the model is loaded once, in `main`, and only a single worker thread ever calls it (jax programs are
compiled per shape and the accelerator is one shared resource), so requests from several browsers wait in a
bounded FIFO queue and see their position instead of competing for memory; a full queue answers 503 with a
message rather than piling up work. The event loop only validates, enqueues and reports.

Modules: validation (request fields), worker (the queue and the model thread), app (starlette routes, Host check,
headers, body reading), server (uvicorn and its protocol guard, `Server`), command (`main`). They are imported when
a name below is first used: dalle's BUILD generator makes every module of a package depend on its `__init__`, so
this file names them as strings (lazy, like dalle/cli) rather than importing them.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "dalle.serve.validation": ("FieldError", "Limits", "Defaults", "GenerateRequest", "FIELDS", "LABELS", "MAX_SEED",
                               "parse_request", "parse_json_body", "decode_image_field", "max_request_bytes"),
    "dalle.serve.worker": ("Worker", "Job", "QueueFull", "GenerateFn", "RerankFn", "ProgressFn", "png_bytes"),
    "dalle.serve.app": ("HttpLimits", "MAX_BODY_BYTES", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "build_app",
                        "render_page"),
    "dalle.serve.server": ("Server", "ListenError", "GuardedH11Protocol", "DEFAULT_HOST", "DEFAULT_PORT"),
    "dalle.serve.command": ("main", "build_server", "generator_fn", "clip_scorer", "StartupError", "FLAG_LABELS",
                            "COMPLETION_LABELS", "DEFAULT_CHECKPOINT", "DEFAULT_MAX_COMPILED", "_parser"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(name for name in _MODULE_OF if not name.startswith("_"))


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'dalle.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
