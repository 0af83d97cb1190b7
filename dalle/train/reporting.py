"""Console progress bar with ETA, TensorBoard summaries, and a metrics.jsonl log; only process 0 writes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from dalle import paths


def quiet_library_logs() -> None:
    """orbax and TensorFlow log every checkpoint step at INFO; keep the console for the progress bar and metrics
    (DALLE_VERBOSE=1 keeps them)."""
    if os.environ.get("DALLE_VERBOSE") == "1":
        return
    import logging

    for name in ("absl", "orbax", "tensorflow", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Reporter:
    def __init__(self, workdir: str, total_steps: int, start_step: int, progress_bar: bool = True):
        quiet_library_logs()
        self.main = jax.process_index() == 0
        self.workdir = workdir
        self._writer = None
        self._bar = None
        self._jsonl: str | None = None  # the metrics.jsonl path (process 0 only)
        if not self.main:
            return
        paths.makedirs(workdir)
        self._jsonl = paths.join(workdir, "metrics.jsonl")
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr, mininterval=1.0)

    @property
    def writer(self):
        """TensorBoard writer, created on first use (it imports TensorFlow, which costs seconds)."""
        if self._writer is None and self.main:
            from clu import metric_writers

            self._writer = metric_writers.SummaryWriter(paths.join(self.workdir, "tensorboard"))
        return self._writer

    def advance(self, n: int = 1, postfix: Mapping[str, float] | None = None) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        if not self.main:
            return
        clean = {f"{prefix}{k}": float(np.asarray(v)) for k, v in values.items()}
        self.writer.write_scalars(step, clean)
        # Opened per row (every log_every steps): the file is complete on disk (or in the bucket) after each one.
        with paths.open_file(self._jsonl, "a") as f:
            f.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        if self._bar is None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in clean.items())
            print(f"step {step}: {shown}", file=sys.stderr, flush=True)

    def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        if not self.main or not images:
            return
        self.writer.write_images(step, {k: np.asarray(v) for k, v in images.items()})

    def message(self, text: str) -> None:
        if not self.main:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def run_summary(workdir: str, metric: str = "train/loss") -> dict:
    """What a finished (or stopped) run's metrics.jsonl says: its last step, its training minutes and the last
    logged value of `metric` (None each when the log has no row with `metric`). The reports (tools/eval_report.py,
    tools/tokenizer_ceiling.py) read runs through this, so they agree on what "minutes" means: the sum of the logged
    training windows, each the steps since the previous train row at that row's logged rate (start-up, compile,
    evals and checkpoints inside a window included). A run stopped and resumed later is counted without the pause,
    which wall time from its first row to its last would add. `workdir` may be one of its checkpoint steps
    (WORKDIR/checkpoints/STEP): then the run up to that step."""
    from dalle import model_dir

    step_of = model_dir.checkpoint_step(workdir)
    workdir, up_to = step_of if step_of is not None else (workdir, None)
    path = paths.join(workdir, "metrics.jsonl")
    rows = []
    if paths.isfile(path):
        rows = [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]
    if up_to is not None:
        rows = [r for r in rows if r.get("step", 0) <= up_to]
    with_metric = [r for r in rows if metric in r]
    if not with_metric:
        return {"steps": None, "minutes": None, "last": None}
    seconds, previous = 0.0, 0
    for r in rows:
        rate = r.get("train/steps_per_s")
        if rate:
            seconds += max(r["step"] - previous, 0) / rate
            previous = max(previous, r["step"])
    last = with_metric[-1]
    return {"steps": last["step"] if up_to is None else up_to, "minutes": seconds / 60, "last": last[metric]}
