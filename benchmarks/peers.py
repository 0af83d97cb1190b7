"""Peer environments and the worker protocol the benchmarks use to time ours and a peer side by side.

    .venv/bin/python -m benchmarks.peers            # creates what is missing (idempotent), then checks both peers

Peers (borisdayma/dalle-mini, PyPI `dalle-mini`; CompVis/taming-transformers, PyPI `taming-transformers-rom1504`):
  * dalle-mini 0.1.5 in its own venv `.venv-dallemini` (its pins clash with ours): `pip install --no-deps
    dalle-mini==0.1.5` plus jax 0.4.13 & co. (the same recipe as tools/make_dalle_mini_fixtures.py --setup);
  * taming-transformers-rom1504 0.0.6 with torch 2.13.0 CPU inside our `.venv` (requirements-ref.txt, as
    `make setup-ref` installs it).

Worker protocol (stdlib only: this module is imported by the peer venv too). A worker is a subprocess that reads one
JSON object per line on stdin and answers one JSON line on stdout prefixed with `@@bench ` (libraries may print):
`{"op": "setup", ...}` -> `{"compile_s", ...}` (build + ahead-of-time compile), `{"op": "run"}` -> `{"seconds"}`,
`{"op": "quit"}`. Errors come back as `{"error": traceback}` and are raised by the driver.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DALLE_MINI_VENV = os.path.join(ROOT, ".venv-dallemini")
DALLE_MINI_PYTHON = os.path.join(DALLE_MINI_VENV, "bin", "python")
DALLE_MINI_PINS = ["jax==0.4.13", "jaxlib==0.4.13", "flax==0.6.11", "optax==0.2.1", "chex==0.1.82",
                   "transformers==4.25.1", "tokenizers==0.13.3", "numpy==1.26.4", "scipy==1.12.0", "einops",
                   "unidecode", "ftfy", "emoji", "pillow", "wandb"]
OUR_PYTHON = sys.executable
MARK = "@@bench "
RESULTS_ENV = "DALLE_BENCH_RESULTS"  # run_all --quick points the benchmarks' result files elsewhere


def use_results_dir_from_env() -> None:
    """Benchmarks call this first: with $DALLE_BENCH_RESULTS set, results/*.md go there (smoke runs must not
    overwrite the real tables)."""
    d = os.environ.get(RESULTS_ENV)
    if d:
        from benchmarks import common

        common.RESULTS = d


# --------------------------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------------------------
def _ok(python: str, code: str) -> bool:
    if not os.path.exists(python):
        return False
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return r.returncode == 0


DALLE_MINI_CHECK = ("import jax; jax.experimental.PartitionSpec = jax.sharding.PartitionSpec; "
                    "assert jax.__version__ == '0.4.13'; from dalle_mini.model import DalleBart, DalleBartConfig")
TAMING_CHECK = ("import sys, types, torch, pytorch_lightning; sys.modules.setdefault('torchvision', "
                "types.ModuleType('torchvision')); from taming.models.vqgan import VQModel")


def ensure_dalle_mini(log=print) -> str:
    """Creates .venv-dallemini with dalle-mini 0.1.5 and its pins where missing; returns its python."""
    if _ok(DALLE_MINI_PYTHON, DALLE_MINI_CHECK):
        return DALLE_MINI_PYTHON
    log(f"peers: creating {os.path.relpath(DALLE_MINI_VENV, ROOT)} (dalle-mini 0.1.5 + pins, a few minutes of pip)")
    base = os.environ.get("PYTHON", "python3")
    if not os.path.exists(DALLE_MINI_PYTHON):
        subprocess.check_call([base, "-m", "venv", DALLE_MINI_VENV])
    pip = [DALLE_MINI_PYTHON, "-m", "pip", "install", "-q"]
    subprocess.check_call(pip + ["--no-deps", "dalle-mini==0.1.5"])
    subprocess.check_call(pip + DALLE_MINI_PINS)
    if not _ok(DALLE_MINI_PYTHON, DALLE_MINI_CHECK):
        raise RuntimeError(f"{DALLE_MINI_VENV}: dalle-mini still does not import after setup")
    return DALLE_MINI_PYTHON


def ensure_taming(log=print) -> str:
    """Installs torch 2.13.0 + taming-transformers-rom1504 into our venv where missing (= `make setup-ref`)."""
    if _ok(OUR_PYTHON, TAMING_CHECK):
        return OUR_PYTHON
    log("peers: installing the torch/taming reference into our venv (requirements-ref.txt)")
    pip = [OUR_PYTHON, "-m", "pip", "install", "-q"]
    subprocess.check_call(pip + ["-r", os.path.join(ROOT, "requirements-ref.txt")])
    subprocess.check_call(pip + ["--no-deps", "taming-transformers-rom1504==0.0.6"])
    if not _ok(OUR_PYTHON, TAMING_CHECK):
        raise RuntimeError("taming-transformers still does not import after setup")
    return OUR_PYTHON


def ensure_all(log=print) -> dict:
    return {"dalle_mini": ensure_dalle_mini(log), "taming": ensure_taming(log)}


# --------------------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------------------
def serve(setup: Callable[[dict], tuple[Callable[[], None], dict]]) -> None:
    """Worker main loop. `setup(request)` builds and compiles, returning (run_once, info); run_once must block."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the libraries print goes to stderr, answers stay parseable
    run_once = None

    def answer(obj):
        out.write(MARK + json.dumps(obj) + "\n")
        out.flush()

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            if req["op"] == "setup":
                run_once = None
                run_once, info = setup(req)
                answer(info)
            elif req["op"] == "run":
                t = time.perf_counter()
                run_once()
                answer({"seconds": time.perf_counter() - t})
            elif req["op"] == "quit":
                answer({"bye": True})
                return
            else:
                answer({"error": f"unknown op {req['op']!r}"})
        except Exception:  # noqa: BLE001 - reported to the driver
            answer({"error": traceback.format_exc()})


# --------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------
class WorkerTimeout(RuntimeError):
    """A worker call ran past its time limit; `seconds` is how long it had run (a lower bound on its time)."""

    def __init__(self, name: str, op: str, seconds: float):
        super().__init__(f"worker {name}: {op} still running after {seconds:.1f} s")
        self.seconds = seconds


class Worker:
    """A running worker process (`argv`), e.g. [DALLE_MINI_PYTHON, 'benchmarks/peer_dalle_mini.py']."""

    def __init__(self, argv: list[str], name: str, env: dict | None = None):
        self.name = name
        e = dict(os.environ if env is None else env)
        e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
        self.stderr_path = os.path.join("/tmp", f"bench-{name}-{os.getpid()}-{time.time_ns()}.log")
        self._err = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, text=True, env=e)
        # A reader thread, so that a call can give up after a time limit without blocking on readline().
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # EOF

    def call(self, timeout_s: float | None = None, **req) -> dict:
        """Sends one request and waits for its answer; past `timeout_s` the worker is killed (WorkerTimeout)."""
        start = time.perf_counter()
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        while True:
            left = None if timeout_s is None else timeout_s - (time.perf_counter() - start)
            try:
                if left is not None and left <= 0:
                    raise queue.Empty
                line = self._lines.get(timeout=left)
            except queue.Empty:
                self.proc.kill()
                raise WorkerTimeout(self.name, req.get("op", "?"), time.perf_counter() - start) from None
            if not line:
                raise RuntimeError(f"worker {self.name} died; its log ({self.stderr_path}):\n{self._tail()}")
            if line.startswith(MARK):
                ans = json.loads(line[len(MARK):])
                if "error" in ans:
                    raise RuntimeError(f"worker {self.name} failed on {req.get('op')}:\n{ans['error']}")
                return ans

    def _tail(self) -> str:
        self._err.flush()
        with open(self.stderr_path) as f:
            return f.read()[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="quit")
            except (RuntimeError, BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._err.close()
        try:
            os.remove(self.stderr_path)
        except OSError:
            pass


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def compare(ours: tuple[list[str], dict], peer: tuple[list[str], dict] | None, *, repeats: int = 3,
            warmup: int = 1, peer_repeats: int | None = None, peer_warmup: int | None = None,
            concurrent: bool = True, peer_limit_x: float | None = None, log=print) -> dict:
    """Times ours and the peer interleaved (ours, peer, ours, peer, ...), each compiled ahead of time first.

    ours / peer: (worker argv, setup request). concurrent=True keeps both workers alive and alternates single runs;
    False (when both would not fit in memory together) runs `repeats` rounds of [ours worker: setup, warm-up, one
    run; peer worker: the same], so compile is repeated and its median reported.
    peer_limit_x (concurrent only): a peer run still going after `peer_limit_x` times ours' median so far is stopped
    and its elapsed time kept as a lower bound (`res["peer"]["stopped_after"]`, median None): proves a speed-up goal
    without waiting the best part of an hour for a peer that needs minutes per call.
    Returns {"ours": {...}, "peer": {...}} with the median seconds, every run, and compile seconds.
    """
    peer_repeats = repeats if peer_repeats is None else peer_repeats
    peer_warmup = warmup if peer_warmup is None else peer_warmup
    sides = {"ours": ours, **({"peer": peer} if peer else {})}
    res = {k: {"runs": [], "compile": [], "info": {}} for k in sides}
    reps = {"ours": repeats, "peer": peer_repeats}
    warm = {"ours": warmup, "peer": peer_warmup}

    def setup(name, w):
        info = w.call(**dict(sides[name][1], op="setup"))
        res[name]["compile"].append(info.pop("compile_s"))
        res[name]["info"] = info
        log(f"  {name}: compiled in {res[name]['compile'][-1]:.2f} s {info}")

    def run(name, w, record=True):
        limit = None
        if name == "peer" and peer_limit_x and res["ours"]["runs"]:
            limit = peer_limit_x * _median(res["ours"]["runs"])
        try:
            t = w.call(op="run", timeout_s=limit)["seconds"]
        except WorkerTimeout as e:
            res[name]["stopped_after"] = e.seconds
            log(f"  {name}: stopped after {e.seconds:.1f} s ({peer_limit_x:g}x ours' median); kept as a lower bound")
            raise
        if record:
            res[name]["runs"].append(t)
        log(f"  {name}: {'run' if record else 'warm-up'} {t:.3f} s")

    if concurrent:
        workers = {}
        try:
            for name in sides:
                workers[name] = Worker(sides[name][0], name)
                setup(name, workers[name])
            for name in sides:
                for _ in range(warm[name]):
                    run(name, workers[name], record=False)
            for i in range(max(reps[n] for n in sides)):
                for name in sides:
                    if i < reps[name] and "stopped_after" not in res[name]:
                        try:
                            run(name, workers[name])
                        except WorkerTimeout:
                            pass
        finally:
            for w in workers.values():
                w.close()
    else:
        for i in range(max(reps[n] for n in sides)):
            for name in sides:
                if i >= reps[name]:
                    continue
                w = Worker(sides[name][0], name)
                try:
                    setup(name, w)
                    for _ in range(warm[name]):
                        run(name, w, record=False)
                    run(name, w)
                finally:
                    w.close()
    for name in sides:
        res[name]["median"] = _median(res[name]["runs"])
        res[name]["compile_median"] = _median(res[name]["compile"])
    return res


def main() -> int:
    paths = ensure_all()
    print(json.dumps(paths, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
