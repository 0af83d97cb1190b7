"""Train-step compile time on CPU: the task's own step, and the step inside the loop's NaN/Inf guard, which keeps
the old state when the new one is not finite, written two ways: one `jnp.where` per state leaf (what the loop did)
and one `lax.cond` over the whole state (what `dalle.train.loop.guarded_step` does now).

    .venv/bin/python -m benchmarks.bench_train_compile            # configs/vqgan_f4_32.py and configs/gan_shapes.py
    .venv/bin/python -m benchmarks.bench_train_compile --quick    # the VQGAN only

Each figure is `jax.jit(step).lower(shapes).compile()` of a fresh function (no compilation cache), so it is what a
training run waits before its first step.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from benchmarks import common
from dalle import config as config_lib
from dalle.train import loop

CONFIGS = ("configs/vqgan_f4_32.py", "configs/gan_shapes.py")


def per_leaf_guard(task) -> Callable:
    """The guard as it was: a select per leaf."""

    def step(state, batch, rng):
        new_state, metrics = task.train_step(state, batch, rng)
        ok = jnp.isfinite(metrics["loss"]) & loop.all_finite(new_state)
        return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new_state, state), metrics

    return step


def compile_seconds(fn: Callable, *args) -> float:
    start = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - start


def measure(config_path: str) -> list[object]:
    config = config_lib.load_config(config_path, [])
    task = loop.make_task(config)
    state = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    batch = task.batch_spec(config.train.batch_size)
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    leaves = len(jax.tree_util.tree_leaves(state))
    plain = compile_seconds(task.train_step, state, batch, rng)
    select = compile_seconds(per_leaf_guard(task), state, batch, rng)
    cond = compile_seconds(loop.guarded_step(task), state, batch, rng)
    return [config_path, leaves, config.train.batch_size, f"{plain:.1f}", f"{select:.1f}", f"{cond:.1f}",
            f"{select / cond:.1f}x"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the VQGAN only")
    args = parser.parse_args(argv)
    rows = [measure(c) for c in (CONFIGS[:1] if args.quick else CONFIGS)]
    body = common.table(["config", "state leaves", "batch", "task step compile s", "guard: select per leaf s",
                         "guard: one cond s", "select / cond"], rows)
    body += ("\nThe guard is the loop's NaN/Inf check (`dalle.train.loop.guarded_step`): the new state is kept only "
             "if the loss and every new leaf are finite. XLA:CPU compiles a select per leaf of a GAN or VQGAN state "
             "(two networks, their optimizer moments) far slower than one conditional over the whole state.\n")
    common.write_result("train_compile", "Train-step compile time and the NaN/Inf guard",
                        ".venv/bin/python -m benchmarks.bench_train_compile" + (" --quick" if args.quick else ""),
                        body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
