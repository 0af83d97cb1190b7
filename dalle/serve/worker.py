"""The one thread that runs the model: a bounded FIFO of jobs, their progress and ETA, reranking, and errors
attributed to whoever can fix them (the request's author, or this server's log)."""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import logging
import random
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Protocol

import numpy as np

from dalle.serve.validation import FieldError, GenerateRequest, clip

log = logging.getLogger("dalle.serve")

ProgressFn = Callable[[float, str], None]
"""`progress(fraction in [0, 1], what is happening)`: called by a generate function between its stages."""


class GenerateFn(Protocol):
    """Samples `n` images for one prompt -> uint8 [n, H, W, 3]. Raises `dalle.generation.GenerationError` with a
    message for the user when the request cannot be served (e.g. a prompt with no words left after cleaning, an
    upload that is no picture); any other exception, ValueError included, is reported as this server's failure.
    `image` (an uploaded file's encoded bytes) and `keep_rows`: image completion, the top `keep_rows` code rows of
    `image` kept and the rest drawn to match the prompt; both None for plain generation."""

    def __call__(self, prompt: str, n: int, condition_scale: float, top_k: int, temperature: float, seed: int,
                 progress: ProgressFn, *, image: bytes | None = None, keep_rows: int | None = None) -> np.ndarray: ...


RerankFn = Callable[[str, np.ndarray], np.ndarray]
"""(prompt, uint8 images [n, H, W, 3]) -> float scores [n], higher = better (CLIP: 100 cos(image, prompt)). Scores
rather than an order so the page can show them; the server ranks them with dalle.eval.rerank.rerank_order."""


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
    error_status: int | None = None  # 400: the request cannot be served as asked; 500: this server failed
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


# The generator's messages start with what they are about (dalle/generation.py `tokenize`, `_check_numbers`, and
# `completion_prompt` with the labels dalle/serve/command.py gives it: "image of N bytes is not an image ...").
_GENERATOR_FIELDS = (("prompt", "prompt"), ("number of images", "n"), ("condition scale", "condition_scale"),
                     ("top-k", "top_k"), ("temperature", "temperature"), ("image ", "image"),
                     ("keep rows", "keep_rows"))


def generator_field(message: str) -> str | None:
    """The API field a GenerationError's message is about, so the page can mark that input."""
    return next((field for prefix, field in _GENERATOR_FIELDS if message.startswith(prefix)), None)


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
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- called from the HTTP event loop (every call only takes the lock briefly) -----------------------------
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
                out["error_status"] = job.error_status
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
                    "completion": job.request.completion,  # the top keep_rows code rows came from the upload
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
                    if job.request.image is not None:  # finished jobs stay for polling; their uploads need not
                        job.request = dataclasses.replace(job.request, image=None)
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
                                                     r.seed, progress, image=r.image, keep_rows=r.keep_rows))
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
        except Exception as e:  # keep serving: one broken request must not take the demo down
            self._fail_with(job, e)
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
        completing = f" completing {r.keep_rows} rows of a {r.image_bytes}-byte upload" if r.completion else ""
        log.info("job %s: %r n=%d seed=%d%s done in %.2f s", job.id, r.prompt, r.n, r.seed, completing,
                 now - job.started)

    def _fail_with(self, job: Job, e: Exception) -> None:
        """Who is to blame: the request (GenerationError or FieldError: the message says what to change, 400)
        or this server (anything else, a bare ValueError from deep in the model included: logged with its
        traceback, 500). A ValueError is not proof of a bad request, and blaming the user for one would hide a
        server bug behind a message they cannot act on."""
        from dalle.generation import GenerationError

        if isinstance(e, FieldError):
            self._fail(job, str(e), e.field, 400)
        elif isinstance(e, GenerationError):
            self._fail(job, str(e), generator_field(str(e)), 400)
        else:
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, f"internal error while generating: {type(e).__name__}: {clip(str(e), 300)}", None, 500)

    def _fail(self, job: Job, message: str, field: str | None, status: int) -> None:
        with self._cond:
            job.status, job.stage, job.error, job.error_field = "error", "failed", message, field
            job.error_status = status
            job.finished = time.time()
