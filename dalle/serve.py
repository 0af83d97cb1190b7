"""`dalle serve`: the web demo, one page on 127.0.0.1 that turns a prompt into a (CLIP-reranked) grid of images.

    dalle serve                                    # outputs/demo/dalle (what `make demo` writes), port 7860
    dalle serve --checkpoint runs/mini --clip clip_dir --host 127.0.0.1 --port 7860

Why the standard library (`http.server`) and not gradio: the demo must run offline, start fast and stay small; one
inline HTML page (no CDN) plus a four-route JSON API is all it needs.

API (every error is JSON `{"error": message, "field": name-or-null}`, messages name the field and its value):
    GET  /                              the page
    GET  /api/info                      model, reranking on/off, limits, defaults, queue length, ready
    POST /api/generate                  {"prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed"}
                                        -> 202 {"id", "status": "queued", "position"} | 400 (bad field) | 503 (full)
    GET  /api/jobs/<id>                 status (queued/running/done/error), position, stage, progress, eta, result
    GET  /api/jobs/<id>/images/<i>.png  one image of a finished job (best first when reranked)
    GET  /api/jobs/<id>/grid.png        all of them as one grid

Design: the model is loaded once, in `main`, and only a single worker thread ever calls it (jax programs are
compiled per shape and the accelerator is one shared resource), so requests from several browsers wait in a
bounded FIFO queue and see their position instead of competing for memory; a full queue answers 503 with a
message rather than piling up work. The HTTP threads only validate, enqueue and report.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import html
import io
import ipaddress
import itertools
import json
import logging
import math
import random
import re
import sys
import threading
import time
import traceback
import urllib.parse
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

log = logging.getLogger("dalle.serve")

DEFAULT_CHECKPOINT = "outputs/demo/dalle"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_SEED = 2 ** 31 - 1
MAX_BODY_BYTES = 64 * 1024

ProgressFn = Callable[[float, str], None]
"""`progress(fraction in [0, 1], what is happening)`: called by a generate function between its stages."""


class GenerateFn(Protocol):
    """Samples `n` images for one prompt -> uint8 [n, H, W, 3]; raises `ValueError` (e.g. GenerationError) with a
    message for the user when the request cannot be served."""

    def __call__(self, prompt: str, n: int, condition_scale: float, top_k: int, temperature: float, seed: int,
                 progress: ProgressFn) -> np.ndarray: ...


RerankFn = Callable[[str, np.ndarray], np.ndarray]
"""(prompt, uint8 images [n, H, W, 3]) -> float scores [n], higher = better (CLIP: 100 cos(image, prompt)). Scores
rather than an order so the page can show them; the server ranks them with dalle.eval.rerank.rerank_order."""


# ----------------------------------------------------------------------------------------------------------------
# Request validation
# ----------------------------------------------------------------------------------------------------------------
class FieldError(ValueError):
    """A request field that cannot be used; `field` is the API name so the page can highlight its input."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for, so a single visitor cannot monopolise the model."""

    max_images: int = 16
    max_prompt_chars: int = 500
    max_condition_scale: float = 20.0
    max_temperature: float = 5.0
    image_codes: int = 16384  # top-k can range up to the model's codebook size


def _schema_default(key: str) -> Any:
    """A field defaulting to the sampling schema's value (dalle/sampling_schema.py: the one place defaults live)."""

    def default() -> Any:
        from dalle import sampling_schema

        return sampling_schema.sampling_defaults()[key]

    return dataclasses.field(default_factory=default)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """The values the page starts with and the API uses for missing fields (seed None = a fresh random seed):
    `dalle serve` takes them from the model's `sampling` section (`from_sampling`) with the command line's
    overrides; fields not given here are the sampling schema's."""

    n: int = _schema_default("candidates")
    top: int = _schema_default("keep")  # 0 = keep all n
    condition_scale: float = _schema_default("guidance")
    top_k: int = _schema_default("top_k")
    temperature: float = _schema_default("temperature")

    @classmethod
    def from_sampling(cls, settings: Any, reranking: bool, max_images: int) -> "Defaults":
        """From `dalle.sampling_schema.Sampling`; keeping fewer than n needs reranking."""
        n = min(settings.candidates, max_images)
        return cls(n=n, top=min(settings.keep, n) if reranking else 0, condition_scale=settings.guidance,
                   top_k=settings.top_k, temperature=settings.temperature)


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    n: int
    top: int  # images kept (== n when not reranking)
    condition_scale: float
    top_k: int
    temperature: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = ("prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed")
LABELS = {"prompt": "prompt", "n": "number of images", "top": "keep best", "condition_scale": "guidance",
          "top_k": "top-k", "temperature": "temperature", "seed": "seed"}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_int(field: str, value: Any) -> int:
    label = LABELS[field]
    if isinstance(value, bool):
        raise FieldError(field, f"{label} = {value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise FieldError(field, f"{label} = {value!r} is not a whole number")


def _as_float(field: str, value: Any) -> float:
    label = LABELS[field]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FieldError(field, f"{label} = {value!r} is not a number")
    try:
        out = float(value)
    except ValueError:
        raise FieldError(field, f"{label} = {value!r} is not a number") from None
    if not math.isfinite(out):
        raise FieldError(field, f"{label} = {value!r} must be a finite number")
    return out


def parse_request(body: Any, limits: Limits, defaults: Defaults, reranking: bool,
                  rng: random.Random | None = None) -> GenerateRequest:
    """Validates a `/api/generate` body (numbers may come as JSON numbers or as the strings a form holds; blank
    numeric fields take their defaults, a blank seed a random one). Raises FieldError naming the first bad field."""
    if not isinstance(body, Mapping):
        raise FieldError(None, f"the request body must be a JSON object with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FieldError(unknown[0], f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")

    prompt = body.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        raise FieldError("prompt", "prompt is empty: describe the image, e.g. 'a red circle'")
    if not isinstance(prompt, str):
        raise FieldError("prompt", f"prompt = {prompt!r} must be text")
    prompt = " ".join(prompt.split())  # newlines and runs of spaces mean nothing to the tokenizer
    if len(prompt) > limits.max_prompt_chars:
        raise FieldError("prompt", f"prompt is {len(prompt)} characters long; the limit is "
                                   f"{limits.max_prompt_chars}")

    def value(field: str, default: Any) -> Any:
        v = body.get(field)
        return default if _blank(v) else v

    n = _as_int("n", value("n", min(defaults.n, limits.max_images)))
    if not 1 <= n <= limits.max_images:
        raise FieldError("n", f"number of images = {n} must be between 1 and {limits.max_images}")

    top = _as_int("top", value("top", defaults.top if reranking else 0))
    if reranking:
        if not 0 <= top <= n:
            raise FieldError("top", f"keep best = {top} must be between 0 (keep all) and the number of images ({n})")
    elif top not in (0, n):
        raise FieldError("top", f"keep best = {top} needs CLIP reranking, which is off (start `dalle serve` with "
                                f"--clip DIR); leave it empty to show all {n} images")
    top = top or n

    scale = _as_float("condition_scale", value("condition_scale", defaults.condition_scale))
    if not 0 <= scale <= limits.max_condition_scale:
        raise FieldError("condition_scale", f"guidance = {scale:g} must be between 0 and "
                                            f"{limits.max_condition_scale:g} (1 = off)")
    top_k = _as_int("top_k", value("top_k", defaults.top_k))
    if not 0 <= top_k <= limits.image_codes:
        raise FieldError("top_k", f"top-k = {top_k} must be between 0 (off) and {limits.image_codes} "
                                  f"(the model's image codes)")
    temperature = _as_float("temperature", value("temperature", defaults.temperature))
    if not 0 <= temperature <= limits.max_temperature:
        raise FieldError("temperature", f"temperature = {temperature:g} must be between 0 (greedy) and "
                                        f"{limits.max_temperature:g}")
    seed_value = body.get("seed")
    if _blank(seed_value):
        seed = (rng or random).randrange(MAX_SEED + 1)
    else:
        seed = _as_int("seed", seed_value)
        if not 0 <= seed <= MAX_SEED:
            raise FieldError("seed", f"seed = {seed} must be between 0 and {MAX_SEED} (empty = random)")
    return GenerateRequest(prompt, n, top, scale, top_k, temperature, seed)


# ----------------------------------------------------------------------------------------------------------------
# Jobs and the worker
# ----------------------------------------------------------------------------------------------------------------
class QueueFull(RuntimeError):
    pass


@dataclasses.dataclass
class Job:
    id: str
    request: GenerateRequest
    created: float
    status: str = "queued"  # queued -> running -> done | error
    stage: str = "waiting in the queue"
    progress: float = 0.0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    error_field: str | None = None
    images_png: list[bytes] = dataclasses.field(default_factory=list)
    grid_png: bytes | None = None
    image_size: tuple[int, int] | None = None
    reranked: bool = False
    order: list[int] = dataclasses.field(default_factory=list)  # sample indices shown, in display order
    scores: list[float] | None = None  # the shown images' rerank scores
    warnings: list[str] = dataclasses.field(default_factory=list)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Worker:
    """Owns the generate function: one thread takes jobs from a bounded FIFO and runs them one at a time."""

    def __init__(self, generate_fn: GenerateFn, rerank_fn: RerankFn | None = None, *, max_queue: int = 8,
                 keep_jobs: int = 100, warmup: Callable[[], Any] | None = None):
        if max_queue < 1:
            raise ValueError(f"max_queue = {max_queue} must be >= 1")
        self.generate_fn = generate_fn
        self.rerank_fn = rerank_fn
        self.max_queue = max_queue
        self.keep_jobs = keep_jobs
        self._warmup = warmup
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._running: Job | None = None
        self._ids = itertools.count(1)
        self._stop = False
        self._seconds_per_image: float | None = None  # running estimate, for the ETA shown while waiting
        self.ready = warmup is None
        self._thread = threading.Thread(target=self._loop, name="dalle-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- called from HTTP threads ---------------------------------------------------------------------------
    def submit(self, request: GenerateRequest) -> Job:
        with self._cond:
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({len(self._queue)} requests waiting, the limit is "
                                f"{self.max_queue}); try again in a minute")
            job = Job(id=f"{next(self._ids)}-{random.getrandbits(32):08x}", request=request, created=time.time())
            self._jobs[job.id] = job
            self._queue.append(job)
            self._evict()
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def queue_length(self) -> int:
        with self._cond:
            return len(self._queue)

    def describe(self, job: Job) -> dict[str, Any]:
        """The JSON a client polls: where the job is, what it is doing, and when it is done, its images."""
        now = time.time()
        with self._cond:
            out: dict[str, Any] = {"id": job.id, "status": job.status, "stage": job.stage,
                                   "progress": round(job.progress, 3), "request": job.request.to_json(),
                                   "position": None, "eta_s": None, "elapsed_s": None}
            if job.status == "queued":
                ahead = list(itertools.takewhile(lambda j: j is not job, self._queue))
                out["position"] = len(ahead) + 1
                out["stage"] = ("waiting for the model to warm up" if not self.ready else
                                f"waiting in the queue: {len(ahead) + (self._running is not None)} "
                                f"request(s) ahead")
                if self._seconds_per_image is not None:
                    work = [j.request.n for j in ahead + [job]]
                    left = sum(work) * self._seconds_per_image
                    if self._running is not None and self._running.started is not None:
                        left += max(0.0, self._running.request.n * self._seconds_per_image
                                    - (now - self._running.started))
                    out["eta_s"] = round(left, 1)
            if job.started is not None:
                out["elapsed_s"] = round((job.finished or now) - job.started, 2)
                if job.status == "running" and self._seconds_per_image is not None:
                    out["eta_s"] = round(max(0.0, job.request.n * self._seconds_per_image - (now - job.started)), 1)
            if job.status == "error":
                out["error"] = job.error
                out["field"] = job.error_field
            if job.status == "done":
                base = f"/api/jobs/{job.id}"
                out["result"] = {
                    "images": [f"{base}/images/{i}.png" for i in range(len(job.images_png))],
                    "grid": f"{base}/grid.png",
                    "reranked": job.reranked,
                    "order": job.order,
                    "scores": job.scores,
                    "seed": job.request.seed,
                    "image_size": list(job.image_size or ()),
                    "seconds": out["elapsed_s"],
                    "warnings": job.warnings,
                }
            return out

    # --- the worker thread --------------------------------------------------------------------------------------
    def _evict(self) -> None:
        """Forgets the oldest finished jobs beyond `keep_jobs` (their PNGs are the memory that matters)."""
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "error")]
        for key in finished[: max(0, len(self._jobs) - self.keep_jobs)]:
            del self._jobs[key]

    def _loop(self) -> None:
        if self._warmup is not None:
            t = time.time()
            try:
                self._warmup()
                log.info("warm-up (compilation) took %.1f s", time.time() - t)
            except Exception:  # a failed warm-up only costs the first request its compile time
                log.warning("warm-up failed:\n%s", traceback.format_exc())
            with self._cond:
                self.ready = True
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft()
                self._running = job
                job.status, job.started, job.stage = "running", time.time(), "starting"
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = None
                    self._evict()

    def _progress(self, job: Job) -> ProgressFn:
        def progress(fraction: float, stage: str) -> None:
            with self._cond:
                job.progress = min(1.0, max(job.progress, float(fraction)))
                job.stage = str(stage)
        return progress

    def _run(self, job: Job) -> None:
        r = job.request
        progress = self._progress(job)
        try:
            # Safe here: only this thread generates (catch_warnings swaps process-global state).
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                images = np.asarray(self.generate_fn(r.prompt, r.n, r.condition_scale, r.top_k, r.temperature,
                                                     r.seed, progress))
            if images.ndim != 4 or images.shape[0] != r.n or images.shape[-1] != 3:
                raise RuntimeError(f"the generator returned shape {images.shape}, expected [{r.n}, H, W, 3]")
            images = np.clip(images, 0, 255).astype(np.uint8) if images.dtype != np.uint8 else images
            order, scores = list(range(r.top)), None
            if self.rerank_fn is not None:
                from dalle.eval.rerank import rerank_order

                progress(0.9, f"reranking {r.n} images with CLIP")
                all_scores = np.asarray(self.rerank_fn(r.prompt, images), np.float64)
                if all_scores.shape != (r.n,) or not np.all(np.isfinite(all_scores)):
                    raise RuntimeError(f"the reranker returned scores of shape {all_scores.shape} "
                                       f"(finite: {bool(np.all(np.isfinite(all_scores)))}) for {r.n} images")
                order = [int(i) for i in rerank_order(all_scores[None], r.top)[0]]
                scores = [round(float(all_scores[i]), 3) for i in order]
            progress(0.95, "encoding PNGs")
            from dalle.generation import make_grid

            pngs = [png_bytes(images[i]) for i in order]
            grid = png_bytes(make_grid(images[order], cols=min(len(order), 4)))
        except ValueError as e:  # GenerationError and friends: the user's request, explained
            self._fail(job, str(e), "prompt" if str(e).startswith("prompt") else None)
            return
        except Exception as e:  # keep serving: one broken request must not take the demo down
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, f"internal error while generating: {type(e).__name__}: {e}", None)
            return
        now = time.time()
        with self._cond:
            job.images_png, job.grid_png, job.order = pngs, grid, order
            job.reranked, job.scores = scores is not None, scores
            job.image_size = (int(images.shape[1]), int(images.shape[2]))
            job.warnings = sorted({str(w.message) for w in caught})
            job.status, job.stage, job.progress, job.finished = "done", "done", 1.0, now
            per_image = (now - (job.started or now)) / r.n
            self._seconds_per_image = per_image if self._seconds_per_image is None else (
                0.5 * self._seconds_per_image + 0.5 * per_image)
        log.info("job %s: %r n=%d seed=%d done in %.2f s", job.id, r.prompt, r.n, r.seed, now - job.started)

    def _fail(self, job: Job, message: str, field: str | None) -> None:
        with self._cond:
            job.status, job.stage, job.error, job.error_field = "error", "failed", message, field
            job.finished = time.time()


# ----------------------------------------------------------------------------------------------------------------
# HTTP
# ----------------------------------------------------------------------------------------------------------------
class Server:
    """The demo: a worker around `generate_fn` plus a threading HTTP server. `start()` serves in the background
    (tests), `serve_forever()` in the foreground (`dalle serve`); `url` is where it listens."""

    def __init__(self, generate_fn: GenerateFn, *, rerank_fn: RerankFn | None = None, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, limits: Limits = Limits(), defaults: Defaults | None = None,
                 max_queue: int = 8, warmup: Callable[[], Any] | None = None, title: str = "dalle",
                 model_info: str = "", examples: Sequence[str] = ()):
        self.limits = limits
        defaults = defaults or Defaults()
        self.defaults = dataclasses.replace(defaults, n=min(defaults.n, limits.max_images),
                                            top=defaults.top if rerank_fn is not None else 0)
        self.worker = Worker(generate_fn, rerank_fn, max_queue=max_queue, warmup=warmup)
        self.title = title
        self.model_info = model_info
        self.examples = list(examples)
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self.httpd.daemon_threads = True
        self._http_thread: threading.Thread | None = None

    @property
    def reranking(self) -> bool:
        return self.worker.rerank_fn is not None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def info(self) -> dict[str, Any]:
        return {"title": self.title, "model": self.model_info, "reranking": self.reranking,
                "ready": self.worker.ready, "queue": {"waiting": self.worker.queue_length(),
                                                      "max": self.worker.max_queue},
                "limits": dataclasses.asdict(self.limits), "defaults": dataclasses.asdict(self.defaults),
                "fields": LABELS, "examples": self.examples}

    def start(self) -> "Server":
        self.worker.start()
        self._http_thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                             name="dalle-serve-http", daemon=True)
        self._http_thread.start()
        return self

    def serve_forever(self) -> None:
        self.worker.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.worker.stop()

    def shutdown(self) -> None:
        if self._http_thread is not None:
            self.httpd.shutdown()
            self._http_thread.join(10)
        self.httpd.server_close()
        self.worker.stop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


_JOB_RE = re.compile(r"^/api/jobs/([\w-]+)(?:/(grid\.png|images/(\d+)\.png))?$")


def _make_handler(app: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dalle-serve"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            log.debug("%s %s", self.address_string(), format % args)

        # --- responses --------------------------------------------------------------------------------------
        def _send(self, status: int, body: bytes, content_type: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, status: int, message: str, field: str | None = None) -> None:
            self._json(status, {"error": message, "field": field})

        # --- routes -----------------------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = urllib.parse.urlsplit(self.path).path
            if path in ("/", "/index.html"):
                self._send(200, render_page(app).encode(), "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(200, app.info())
            elif path == "/favicon.ico":
                self._send(204, b"", "image/x-icon")
            elif m := _JOB_RE.match(path):
                job = app.worker.get(m.group(1))
                if job is None:
                    self._error(404, f"no job {m.group(1)!r} (finished jobs are forgotten after a while)")
                elif m.group(2) is None:
                    self._json(200, app.worker.describe(job))
                elif job.status != "done":
                    self._error(409, f"job {job.id} is {job.status}; its images are not ready")
                elif m.group(2) == "grid.png":
                    self._send(200, job.grid_png or b"", "image/png", cache=True)
                else:
                    i = int(m.group(3))
                    if i >= len(job.images_png):
                        self._error(404, f"job {job.id} has {len(job.images_png)} images; there is no image {i}")
                    else:
                        self._send(200, job.images_png[i], "image/png", cache=True)
            else:
                self._error(404, f"no such page: {path}")

        do_HEAD = do_GET  # noqa: N815

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True  # the unread body would be parsed as the next request
                if length < 0:
                    self._error(400, f"bad Content-Length header {self.headers.get('Content-Length')!r}")
                else:
                    self._error(413, f"request body is {length} bytes; the limit is {MAX_BODY_BYTES}")
                return
            raw = self.rfile.read(length)  # read first, so a refused request leaves the connection usable
            path = urllib.parse.urlsplit(self.path).path
            if path != "/api/generate":
                self._error(404, f"no such endpoint: POST {path}")
                return
            origin = self.headers.get("Origin")
            if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != self.headers.get("Host"):
                # Another site's page must not spend this machine's accelerator (the server may be on a LAN).
                self._error(403, f"cross-origin request from {origin} refused")
                return
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                self._error(415, f"send the fields as JSON (Content-Type: application/json), not {ctype!r}")
                return
            try:
                body = json.loads(raw.decode("utf-8") or "null")
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                self._error(400, f"the request body is not valid JSON: {e}")
                return
            try:
                request = parse_request(body, app.limits, app.defaults, app.reranking)
                job = app.worker.submit(request)
            except FieldError as e:
                self._error(400, str(e), e.field)
                return
            except QueueFull as e:
                self._error(503, str(e))
                return
            self._json(202, app.worker.describe(job))

    return Handler


# ----------------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------------
def render_page(app: Server) -> str:
    """The one HTML page: inline CSS and JS (the demo must work offline), settings embedded as JSON."""
    config = json.dumps(app.info()).replace("<", "\\u003c")  # no "</script>" inside the script
    return (_PAGE.replace("__TITLE__", html.escape(app.title))
            .replace("__CONFIG__", config))


_PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__ · text to image</title>
<style>
  :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#667085; --line:#d9dde5; --accent:#3b5bdb;
          --bad:#c92a2a; --badbg:#fff0f0; --ok:#2b8a3e; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg);
         color:var(--ink); }
  main { max-width: 980px; margin: 0 auto; padding: 24px 16px 48px; }
  h1 { font-size: 24px; margin: 0 0 2px; }
  .sub { color: var(--muted); margin: 0 0 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px; }
  label { display:block; font-size: 13px; color: var(--muted); margin-bottom: 4px; }
  .prompt-row { display:flex; gap: 8px; }
  #prompt { flex:1; font-size: 17px; padding: 10px 12px; border:1px solid var(--line); border-radius: 8px; }
  button { font-size: 16px; padding: 10px 18px; border-radius: 8px; border: 0; background: var(--accent);
           color: #fff; cursor: pointer; min-width: 120px; }
  button:disabled { opacity: .55; cursor: default; }
  .controls { display:grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr)); gap: 12px;
              margin-top: 14px; }
  .controls input { width:100%; padding: 7px 8px; border:1px solid var(--line); border-radius: 6px; font-size: 15px; }
  .controls input:disabled { background: #f1f3f5; }
  .hint { font-size: 12px; color: var(--muted); margin-top: 3px; }
  [aria-invalid="true"] { border-color: var(--bad) !important; background: var(--badbg); }
  .examples { margin-top: 10px; font-size: 13px; color: var(--muted); }
  .examples a { color: var(--accent); cursor: pointer; margin-right: 12px; text-decoration: none;
                display: inline-block; white-space: nowrap; }
  #error { display:none; margin-top: 14px; padding: 10px 12px; border-radius: 8px; background: var(--badbg);
           color: var(--bad); border: 1px solid #ffc9c9; }
  #error.show { display:block; }
  #status { display:none; margin-top: 14px; }
  #status.show { display:block; }
  .status-line { display:flex; align-items:center; gap: 10px; }
  .spinner { width: 18px; height: 18px; border: 3px solid #dbe4ff; border-top-color: var(--accent);
             border-radius: 50%; animation: spin .8s linear infinite; flex: none; }
  .done .spinner { display:none; }
  @keyframes spin { to { transform: rotate(360deg); } }
  .bar { height: 6px; background: #e9ecef; border-radius: 3px; overflow: hidden; margin-top: 8px; }
  .bar > div { height: 100%; width: 0; background: var(--accent); transition: width .3s; }
  #results { margin-top: 20px; }
  #results h2 { font-size: 16px; margin: 0 0 4px; }
  .meta { color: var(--muted); font-size: 13px; margin-bottom: 10px; }
  .warn { color: #a85d00; font-size: 13px; margin-bottom: 8px; }
  #grid { display:flex; flex-wrap: wrap; gap: 10px; }
  figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 6px; }
  figure img { display:block; width: 160px; height: auto; image-rendering: pixelated; border-radius: 4px; }
  figcaption { font-size: 12px; color: var(--muted); text-align:center; margin-top: 4px; }
  a.dl { font-size: 13px; color: var(--accent); }
</style>
</head>
<body>
<main>
  <h1>__TITLE__ <span style="font-weight:400;color:var(--muted)">· text to image</span></h1>
  <p class="sub" id="model-info"></p>
  <form id="form" class="card" novalidate autocomplete="off">
    <label for="prompt">Prompt</label>
    <div class="prompt-row">
      <input id="prompt" name="prompt" type="text" placeholder="a red circle above a blue square">
      <button id="generate" type="submit">Generate</button>
    </div>
    <div class="examples" id="examples"></div>
    <div class="controls">
      <div><label for="n">Number of images</label><input id="n" name="n" type="number" step="1">
           <div class="hint" id="n-hint"></div></div>
      <div><label for="top">Keep best (CLIP)</label><input id="top" name="top" type="number" step="1">
           <div class="hint" id="top-hint"></div></div>
      <div><label for="condition_scale">Guidance</label>
           <input id="condition_scale" name="condition_scale" type="number" step="0.5">
           <div class="hint">condition scale, 1 = off</div></div>
      <div><label for="top_k">Top-k</label><input id="top_k" name="top_k" type="number" step="1">
           <div class="hint">0 = all codes</div></div>
      <div><label for="temperature">Temperature</label>
           <input id="temperature" name="temperature" type="number" step="0.1">
           <div class="hint">0 = greedy</div></div>
      <div><label for="seed">Seed</label><input id="seed" name="seed" type="number" step="1" placeholder="random">
           <div class="hint">empty = random</div></div>
    </div>
    <div id="error" role="alert"></div>
    <div id="status" aria-live="polite">
      <div class="status-line"><div class="spinner"></div><span id="status-text"></span></div>
      <div class="bar"><div id="bar"></div></div>
    </div>
  </form>
  <section id="results" hidden>
    <h2 id="result-title"></h2>
    <div class="meta" id="result-meta"></div>
    <div class="warn" id="result-warn"></div>
    <div id="grid"></div>
  </section>
</main>
<script>
const CONFIG = __CONFIG__;
const $ = (id) => document.getElementById(id);
const FIELDS = ["prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed"];
let polling = null;

function init() {
  const d = CONFIG.defaults, l = CONFIG.limits;
  $("n").value = d.n; $("n").min = 1; $("n").max = l.max_images;
  $("n-hint").textContent = "1 to " + l.max_images;
  $("condition_scale").value = d.condition_scale; $("top_k").value = d.top_k; $("temperature").value = d.temperature;
  if (CONFIG.reranking) {
    $("top").value = d.top || ""; $("top").placeholder = "all";
    $("top-hint").textContent = "best k of n by CLIP; empty = all, best first";
  } else {
    $("top").disabled = true; $("top").placeholder = "all";
    $("top-hint").textContent = "reranking is off (start with --clip DIR)";
  }
  $("model-info").textContent = (CONFIG.model ? CONFIG.model + " · " : "") +
      (CONFIG.reranking ? "CLIP reranking on" : "reranking is off: images are shown in sampling order");
  const ex = $("examples");
  if (CONFIG.examples.length) {
    ex.append("Try: ");
    for (const p of CONFIG.examples) {
      const a = document.createElement("a"); a.textContent = p;
      a.onclick = () => { $("prompt").value = p; $("prompt").focus(); };
      ex.append(a);
    }
  }
  $("form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
}

function clearErrors() {
  $("error").classList.remove("show"); $("error").textContent = "";
  for (const f of FIELDS) $(f).removeAttribute("aria-invalid");
}

function showError(message, field) {
  $("error").textContent = message; $("error").classList.add("show");
  if (field && $(field)) { $(field).setAttribute("aria-invalid", "true"); $(field).focus(); }
}

function setStatus(text, fraction, done) {
  $("status").classList.add("show"); $("status").classList.toggle("done", !!done);
  $("status-text").textContent = text;
  $("bar").style.width = Math.round(100 * Math.max(0, Math.min(1, fraction))) + "%";
}

async function submit() {
  clearErrors();
  const body = {};
  for (const f of FIELDS) {
    if (f === "top" && !CONFIG.reranking) continue;
    body[f] = $(f).value;  // raw text: the server validates every field and names the bad one
  }
  // a number input holds "" for text it cannot parse; say so instead of silently using the default
  for (const f of FIELDS.slice(1)) {
    if ($(f).validity && $(f).validity.badInput) {
      showError(CONFIG.fields[f] + " is not a number", f); return;
    }
  }
  $("generate").disabled = true;
  setStatus("sending…", 0);
  let r, data;
  try {
    r = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
    data = await r.json();
  } catch (e) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError("could not reach the server: " + e); return;
  }
  if (!r.ok) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError(data.error || ("HTTP " + r.status), data.field); return;
  }
  poll(data.id);
}

function describe(job) {
  if (job.status === "queued") {
    return "queued: position " + job.position + " (" + job.stage + ")" +
           (job.eta_s != null ? " · about " + Math.ceil(job.eta_s) + " s" : "");
  }
  let s = job.stage;
  if (job.elapsed_s != null) s += " · " + job.elapsed_s.toFixed(1) + " s";
  if (job.eta_s != null && job.eta_s > 0) s += " · about " + Math.ceil(job.eta_s) + " s left";
  return s;
}

async function poll(id) {
  let job;
  try {
    const r = await fetch("/api/jobs/" + encodeURIComponent(id));
    job = await r.json();
    if (!r.ok) throw new Error(job.error || ("HTTP " + r.status));
  } catch (e) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError("lost track of the request: " + e.message); return;
  }
  if (job.status === "done") { showResult(job); return; }
  if (job.status === "error") {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError(job.error, job.field); return;
  }
  setStatus(describe(job), job.status === "queued" ? 0.02 : job.progress);
  polling = setTimeout(() => poll(id), 300);
}

function showResult(job) {
  const res = job.result, req = job.request;
  setStatus("done: " + res.images.length + " image(s) in " + res.seconds.toFixed(1) + " s", 1, true);
  $("generate").disabled = false;
  $("results").hidden = false;
  $("result-title").textContent = "“" + req.prompt + "”";
  $("result-meta").textContent = [
      res.reranked ? "best " + res.images.length + " of " + req.n + " by CLIP" :
                     res.images.length + " sample(s) in sampling order (reranking off)",
      "guidance " + req.condition_scale, "top-k " + req.top_k, "temperature " + req.temperature,
      "seed " + res.seed].join(" · ");
  $("result-warn").textContent = res.warnings.join(" ");
  const grid = $("grid"); grid.replaceChildren();
  const side = Math.max(res.image_size[1] || 0, 160);
  res.images.forEach((src, i) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src; img.alt = req.prompt + " (" + (i + 1) + ")"; img.className = "result";
    img.style.width = side + "px";
    const cap = document.createElement("figcaption");
    cap.textContent = res.reranked ? "#" + (i + 1) + " · sample " + (res.order[i] + 1) + " · CLIP " +
                                     res.scores[i].toFixed(1) : "sample " + (i + 1);
    fig.append(img, cap); grid.append(fig);
  });
  const a = document.createElement("a"); a.href = res.grid; a.className = "dl"; a.textContent = "download grid (PNG)";
  a.download = "grid.png";
  const wrap = document.createElement("div"); wrap.style.width = "100%"; wrap.append(a); grid.append(wrap);
}

init();
</script>
</body>
</html>
"""


# ----------------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------------
def generator_fn(gen: Any, top_p: float | None = None) -> GenerateFn:
    """Adapts a `dalle.generation.Generator` to the server's generate function (same seed -> same images as
    `dalle generate` with the same settings, since both sample all n candidates of a prompt in one call).
    `top_p` applies to every request (None: the model's sampling section)."""

    def generate(prompt: str, n: int, condition_scale: float, top_k: int, temperature: float, seed: int,
                 progress: ProgressFn) -> np.ndarray:
        progress(0.05, f"sampling {n} image(s) ({gen.model.image_length} codes each)")
        codes = gen.codes([prompt], num_images=n, seed=seed, condition_scale=condition_scale, top_k=top_k,
                          top_p=top_p, temperature=temperature)
        progress(0.8, "decoding with the VQGAN")
        return gen.decode(codes)

    return generate


def clip_scorer(clip: Any) -> RerankFn:
    """A loaded CLIP (`dalle.modeling.clip.model.load_clip`: `embed_images`, `embed_texts`) -> the server's rerank function,
    scoring with the eval job's `candidate_scores` so the demo ranks exactly as `dalle eval` does."""
    from dalle.eval import rerank

    def score(prompt: str, images: np.ndarray) -> np.ndarray:
        return rerank.candidate_scores(clip, images, [prompt])[0]

    return score


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dalle serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"trained workdir or model dir (default: {DEFAULT_CHECKPOINT}, what `make demo` writes)")
    p.add_argument("--clip", default=None, help="CLIP checkpoint to rerank with (dalle convert clip / clip_shapes); "
                                                "'' = images in sampling order (default: sampling.clip_checkpoint)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the demo)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--max-images", type=int, default=16, help="most images one request may ask for")
    p.add_argument("--max-queue", type=int, default=8, help="requests that may wait; more get HTTP 503")
    # Sampling flags default to None: the model's `sampling` section (dalle/sampling_schema.py) decides.
    p.add_argument("--n", type=int, default=None, help="the page's default number of images (sampling.candidates)")
    p.add_argument("--top", type=int, default=None,
                   help="the page's default 'keep best' when reranking (sampling.keep)")
    p.add_argument("--condition-scale", type=float, default=None,
                   help="the page's default guidance (sampling.guidance)")
    p.add_argument("--temperature", type=float, default=None, help="the page's default temperature")
    p.add_argument("--top-k", type=int, default=None, help="the page's default top-k")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass for every request (1 = off)")
    p.add_argument("--no-warmup", action="store_true",
                   help="skip compiling the default request at startup (the first request then pays for it)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every HTTP request")
    return p


# Which sampling setting each flag overrides (dalle/sampling_schema.py), and how errors name it.
FLAG_LABELS = {"candidates": "--n", "keep": "--top", "guidance": "--condition-scale", "temperature": "--temperature",
               "top_k": "--top-k", "top_p": "--top-p", "clip_checkpoint": "--clip"}


def build_server(args: argparse.Namespace) -> Server:
    """Loads the model (once) and the optional CLIP, and binds the server; raises ValueError/OSError with a
    message for the user."""
    from dalle import generation, sampling_schema

    for name in ("max_images", "max_queue", "n"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} = {getattr(args, name)} must be >= 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port = {args.port} must be between 0 and 65535")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p = {args.top_p} must be in (0, 1]")
    if args.top is not None and args.top < 0:
        raise ValueError(f"--top = {args.top} must be >= 0 (0 = keep all)")
    if args.condition_scale is not None and not 0 <= args.condition_scale <= Limits.max_condition_scale:
        raise ValueError(f"--condition-scale = {args.condition_scale} must be between 0 and "
                         f"{Limits.max_condition_scale:g}")
    gen = generation.Generator.from_checkpoint(args.checkpoint)
    settings = gen.settings({"candidates": args.n, "keep": args.top, "guidance": args.condition_scale,
                             "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                             "clip_checkpoint": args.clip}, FLAG_LABELS)
    for what, value, bound in (("guidance", settings.guidance, Limits.max_condition_scale),
                               ("temperature", settings.temperature, Limits.max_temperature)):
        if value > bound:
            raise ValueError(f"the default {what} {value:g} (a flag or the model's sampling section) is above the "
                             f"page's limit {bound:g}")
    rerank_fn = None
    clip_dir = sampling_schema.rerank_clip(settings, from_user=args.clip is not None)
    if clip_dir:
        from dalle.modeling.clip import model as clip

        # CLIPs trained on our data tokenize with the DALL·E model's sentencepiece model when they name none.
        rerank_fn = clip_scorer(clip.load_clip(clip_dir, tokenizer_path=gen.config.data.tokenizer_path))
    limits = Limits(max_images=args.max_images, image_codes=int(gen.model.image_vocab_size))
    defaults = Defaults.from_sampling(settings, rerank_fn is not None, args.max_images)
    fn = generator_fn(gen, top_p=settings.top_p)

    def warmup() -> None:  # compiles the default request's shapes while the page is already up
        images = fn("a", defaults.n, defaults.condition_scale, defaults.top_k, defaults.temperature, 0,
                    lambda f, s: None)
        if rerank_fn is not None:
            rerank_fn("a", images)
    examples: Sequence[str] = settings.examples[:5]  # the model's sampling.examples (its training config's)
    m = gen.model
    side = gen.vqgan.tokens_per_side * gen.vqgan.downsample_factor
    info = (f"{gen.config.model.get('kind', 'dalle_bart')} model from {args.checkpoint} · {side}×{side} px · "
            f"{m.image_length} codes of {m.image_vocab_size}")
    return Server(fn, rerank_fn=rerank_fn, host=args.host, port=args.port, limits=limits, defaults=defaults,
                  max_queue=args.max_queue, warmup=None if args.no_warmup else warmup, model_info=info,
                  examples=examples)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if not args.verbose:
        for noisy in ("absl", "jax", "orbax"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    print(f"dalle serve: loading {args.checkpoint} ...", file=sys.stderr, flush=True)
    from dalle import model_dir as checkpoint

    try:
        server = build_server(args)
    except (ValueError, FileNotFoundError, checkpoint.CheckpointError) as e:
        print(f"dalle serve: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken, or the address is not this machine's
        print(f"dalle serve: error: cannot listen on {args.host}:{args.port}: {e.strerror or e} "
              f"(pick another with --port)", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(f"dalle serve: warning: listening on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"dalle serve: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\ndalle serve: stopped", file=sys.stderr)
    finally:
        server.httpd.server_close()
    return 0
