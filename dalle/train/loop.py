"""The one train loop: from a laptop CPU to a pod, for every model family (see dalle/train/task.py).

It builds the mesh from config, creates the state already sharded (or restores it straight onto its devices),
runs the jitted step with explicit in/out shardings and donated state, guards against non-finite losses and updates,
evaluates, samples, checkpoints (async, keep-N, with data position), handles SIGTERM and time limits, and reports
metrics (loss, throughput, MFU) to the console, TensorBoard and metrics.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from dalle import model_dir as model_checkpoint
from dalle import kinds, paths, registry, sharding
from dalle.train import checkpointing, reporting
from dalle.train.task import Task


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps (loss or update) in a row."""


@dataclasses.dataclass
class RunResult:
    step: int
    status: str  # "done" | "preempted" | "time_limit"
    last_metrics: dict
    nonfinite_steps: int
    workdir: str


def make_task(config: ConfigDict) -> Task:
    """The training task of the config's `model.kind` (dalle/kinds), from dalle.registry.TASKS."""
    if "model" not in config:
        raise ValueError("the config has no `model` section: nothing to train")
    return registry.TASKS.get(kinds.of(config).task)(config)


def _numeric(batch: dict) -> dict:
    """Drops strings (captions, specs) that stay on the host."""
    return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in "biuf"}


def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of `tree` is finite (one fused reduction per leaf)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def guarded_step(task: Task) -> Callable:
    """The task's step, but a non-finite loss or a non-finite new state (a NaN/inf gradient reaches the params and
    the optimizer moments even when the loss is finite) keeps the old state; the step counter still advances."""

    def step(state, batch, rng):
        new_state, metrics = task.train_step(state, batch, rng)
        ok = jnp.isfinite(metrics["loss"]) & all_finite(new_state)
        # One cond for the whole state, not a select per leaf: XLA compiles the per-leaf selects of a GAN or VQGAN
        # step (hundreds of leaves) 6-13x slower on CPU (BENCHMARKS.md, "Train-step compile time and the NaN/Inf guard").
        kept = jax.lax.cond(ok, lambda: new_state, lambda: state)
        if isinstance(kept, dict) and "step" in kept:
            kept = {**kept, "step": state["step"] + 1}
        return kept, {**metrics, "nonfinite": 1 - ok.astype(jnp.int32)}

    return step


def agreed_stop(preempted: bool, out_of_time: bool) -> tuple[bool, bool]:
    """The stop flags of every process, or-ed: each host gets its own SIGTERM and reads its own clock, but all must
    checkpoint the same step and stop together (one host saving while the others run the next step hangs the run
    and loses the final checkpoint). One tiny all-gather per step, only with several processes."""
    if jax.process_count() == 1:
        return preempted, out_of_time
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray([preempted, out_of_time], np.int32))
    flags = np.asarray(flags).reshape(-1, 2).max(axis=0)
    return bool(flags[0]), bool(flags[1])


class _Preemption:
    """SIGTERM (what schedulers send before preempting) asks the loop to checkpoint and stop."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _data_state_path(workdir: str, step: int) -> str:
    return paths.join(workdir, "data_state", f"step_{step:09d}.process_{jax.process_index()}.json")


def _save_data_state(workdir: str, step: int, state: dict, keep_steps: set[int]) -> None:
    """Each process keeps its own data position next to the orbax checkpoint of the same step."""
    paths.makedirs(paths.join(workdir, "data_state"))
    paths.write_text_atomic(_data_state_path(workdir, step), json.dumps(state))
    for old in paths.glob(paths.join(workdir, "data_state"), f"step_*.process_{jax.process_index()}.json"):
        s = int(paths.basename(old).split(".")[0][5:])
        if s not in keep_steps and s != step:
            paths.remove(old)


def _load_data_state(workdir: str, step: int) -> dict | None:
    path = _data_state_path(workdir, step)
    if not paths.exists(path):
        return None
    return json.loads(paths.read_text(path))


def train(config: ConfigDict, workdir: str, task: Task | None = None) -> RunResult:
    """Trains until `train.num_steps` (or a time limit / SIGTERM); resumes from `workdir` when it has a checkpoint."""
    reporting.quiet_library_logs()
    tc = config.train
    task = task or make_task(config)
    mesh = sharding.mesh_from_config(config.mesh)
    rules = task.logical_rules()  # the config's mesh.logical_rules, then the defaults
    checkpointing.check_or_write_config(workdir, config)
    ckpt = checkpointing.Checkpointer(workdir, keep=tc.keep_checkpoints)
    base_rng = jax.random.PRNGKey(config.seed)
    init_rng, step_rng_base = jax.random.split(base_rng)

    with sharding.use_mesh(mesh, rules):
        abstract = jax.eval_shape(task.init_state, init_rng)
        state_sh = task.state_shardings(abstract, mesh)
        data = task.train_data(jax.process_index(), jax.process_count())
        start = ckpt.latest_step()
        if start is not None:
            target = jax.tree_util.tree_map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
            )
            state, meta = ckpt.restore(target, start)
            data_state = _load_data_state(workdir, start)
            if data_state is None:
                raise checkpointing.ResumeError(
                    f"{workdir}: checkpoint {start} has no data position for process {jax.process_index()}"
                )
            data.set_state(data_state)
            nonfinite_total = int(meta.get("nonfinite_total", 0))
        else:
            start = 0
            state = jax.jit(task.init_state, out_shardings=state_sh)(init_rng)
            state = task.load_pretrained(state)
            nonfinite_total = 0

        # The position *before* the batch in hand is what a checkpoint must record (it is not trained on yet).
        pending_state = data.get_state()
        first = _numeric(next(data))
        batch_sh = jax.tree_util.tree_map(lambda x: sharding.batch_sharding(mesh, np.ndim(x), rules), first)
        rep = sharding.replicated(mesh)
        step_fn = jax.jit(
            guarded_step(task),
            in_shardings=(state_sh, batch_sh, rep),
            out_shardings=(state_sh, rep),
            donate_argnums=(0,),
        )
        eval_fn = jax.jit(task.eval_step, in_shardings=(state_sh, batch_sh, rep), out_shardings=rep)

        reporter = reporting.Reporter(workdir, tc.num_steps, start, tc.progress_bar)
        n_dev = jax.device_count()
        flops, tokens = task.flops_per_example(), task.tokens_per_example()
        status, last, in_a_row = "done", {}, 0
        window: list[dict] = []
        t_window, steps_window = time.time(), 0
        t_start = time.time()
        step = start
        pending = first
        try:
            with _Preemption() as preempt:
                while step < tc.num_steps:
                    batch = sharding.host_to_global(pending, mesh, rules)
                    rng = jax.random.fold_in(step_rng_base, step)
                    state, metrics = step_fn(state, batch, rng)
                    step += 1
                    if step < tc.num_steps:
                        pending_state = data.get_state()
                        pending = _numeric(next(data))
                    else:
                        pending_state = data.get_state()
                    metrics = jax.device_get(metrics)
                    if metrics["nonfinite"]:
                        nonfinite_total += 1
                        in_a_row += 1
                        reporter.message(f"step {step}: non-finite loss or update, update skipped ({in_a_row} in a "
                                         f"row)")
                        if in_a_row >= tc.max_nonfinite_in_a_row:
                            raise TrainingDiverged(
                                f"{in_a_row} non-finite steps (loss or update) in a row, the last at step {step}; "
                                f"stopping "
                                f"(train.max_nonfinite_in_a_row = {tc.max_nonfinite_in_a_row})"
                            )
                    else:
                        in_a_row = 0
                        window.append({k: float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0})
                    steps_window += 1
                    reporter.advance(1, {"loss": float(metrics["loss"])})

                    if step % tc.log_every == 0 or step == tc.num_steps:
                        dt = max(time.time() - t_window, 1e-9)
                        last = {k: float(np.mean([w[k] for w in window])) for k in (window[0] if window else {})}
                        ex_s = steps_window * tc.batch_size / dt
                        last.update(steps_per_s=steps_window / dt, examples_per_s=ex_s, step_time_s=dt / steps_window,
                                    nonfinite_total=nonfinite_total)
                        if tokens:
                            last["tokens_per_s"] = ex_s * tokens
                        if flops and tc.peak_flops:
                            last["mfu"] = flops * ex_s / (tc.peak_flops * n_dev)
                        last.pop("nonfinite", None)
                        reporter.scalars(step, last, "train/")
                        window, t_window, steps_window = [], time.time(), 0

                    if tc.eval_every and step % tc.eval_every == 0:
                        evals = evaluate(task, state, eval_fn, mesh, rules, tc.eval_batches, step_rng_base)
                        if evals:
                            reporter.scalars(step, evals, "eval/")
                            last.update({f"eval_{k}": v for k, v in evals.items()})
                    if tc.sample_every and step % tc.sample_every == 0:
                        reporter.images(step, task.summaries(state, step))

                    out_of_time = bool(tc.max_minutes) and (time.time() - t_start) / 60 >= tc.max_minutes
                    preempted, out_of_time = agreed_stop(preempt.requested, out_of_time)
                    if preempted:
                        status = "preempted"
                    elif out_of_time:
                        status = "time_limit"
                    if step % tc.checkpoint_every == 0 or step == tc.num_steps or status != "done":
                        _checkpoint(ckpt, workdir, step, state, pending_state, nonfinite_total)
                    if status != "done":
                        reporter.message(f"{status}: checkpoint saved at step {step}")
                        break
        finally:
            ckpt.wait()
            reporter.close()
        if status in ("done", "time_limit"):  # a run that used its time budget is finished too
            params, model_config = task.export_params(state)
            model_checkpoint.save_model(paths.join(workdir, "model"), params, model_config, extra={"step": step})
        ckpt.close()
    return RunResult(step, status, last, nonfinite_total, workdir)


def _checkpoint(ckpt, workdir, step, state, data_state, nonfinite_total) -> None:
    # Wait for the previous async save first: its completion may delete old steps whose data files we prune.
    ckpt.wait()
    keep = set(ckpt.manager.all_steps()) | {step}
    _save_data_state(workdir, step, data_state, keep)
    ckpt.save(step, state, {"step": step, "nonfinite_total": nonfinite_total}, force=True)


def evaluate(task, state, eval_fn, mesh, rules, max_batches, rng_base) -> dict:
    it = task.eval_data(jax.process_index(), jax.process_count())
    if it is None:
        return {}
    sums: dict[str, float] = {}
    n = 0
    for i, batch in enumerate(it):
        if i >= max_batches:
            break
        out = jax.device_get(eval_fn(state, sharding.host_to_global(_numeric(batch), mesh, rules),
                                     jax.random.fold_in(rng_base, 0x7FFFFFFF - i)))
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n += 1
    return {k: v / n for k, v in sums.items()} if n else {}


def dry_run(config: ConfigDict, task: Task | None = None) -> dict:
    """Compiles the train step ahead of time for the configured mesh over abstract shapes (no allocation) and
    reports parameter count and XLA's per-device memory estimate."""
    task = task or make_task(config)
    mesh = sharding.mesh_from_config(config.mesh)
    rules = task.logical_rules()  # the config's mesh.logical_rules, then the defaults
    with sharding.use_mesh(mesh, rules):
        init_rng = jax.random.PRNGKey(config.seed)
        abstract = jax.eval_shape(task.init_state, init_rng)
        state_sh = task.state_shardings(abstract, mesh)
        batch = task.batch_spec(config.train.batch_size)
        batch_sh = jax.tree_util.tree_map(lambda x: sharding.batch_sharding(mesh, len(x.shape), rules), batch)
        rep = sharding.replicated(mesh)
        t0 = time.time()
        lowered = jax.jit(
            guarded_step(task), in_shardings=(state_sh, batch_sh, rep), out_shardings=(state_sh, rep),
            donate_argnums=(0,),
        ).lower(abstract, batch, jax.ShapeDtypeStruct((2,), jnp.uint32))
        compiled = lowered.compile()
        compile_s = time.time() - t0
    mem = compiled.memory_analysis()
    params = abstract["params"] if isinstance(abstract, dict) and "params" in abstract else abstract
    n_params = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
    state_bytes = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(abstract))
    report = {
        "mesh": dict(mesh.shape),
        "devices": mesh.size,
        "params": n_params,
        "state_bytes_total": state_bytes,
        "compile_s": round(compile_s, 1),
    }
    if mem is not None:
        arg = int(getattr(mem, "argument_size_in_bytes", 0))
        out = int(getattr(mem, "output_size_in_bytes", 0))
        alias = int(getattr(mem, "alias_size_in_bytes", 0))
        temp = int(getattr(mem, "temp_size_in_bytes", 0))
        code = int(getattr(mem, "generated_code_size_in_bytes", 0))
        report.update(
            per_device_argument_bytes=arg, per_device_output_bytes=out, per_device_alias_bytes=alias,
            per_device_temp_bytes=temp, per_device_peak_bytes=arg + out - alias + temp + code,
        )
    return report
