"""Per-jit XLA options for the inference jits that were measured to need them (pass to `jax.jit(...,
compiler_options=...)`; options are per compilation, so every other jit keeps XLA's defaults).

Why not global XLA_FLAGS: the same switch that speeds these up could slow the training step, and a library should
not change how a user's own programs compile.
"""

from __future__ import annotations

import jax

# XLA:CPU hands dots, convolutions and some reductions to YNNPACK by default; an empty list keeps them on XLA's own
# Eigen kernels.
_NO_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}


def eigen_kernels_on_cpu() -> dict:
    """On CPU: Eigen instead of YNNPACK for the whole jit; elsewhere: no options.

    Measured on the 2-core dev machine (BENCHMARKS.md): the f16 VQGAN's 3x3 convolutions are ~5-15% faster under
    Eigen (encode at batch 8: 0.82 -> 0.69 s/image), and the KV-cached decode loop's few-row dots 20-25% faster
    (YNNPACK re-reads each weight matrix per block of rows).
    """
    if jax.default_backend() != "cpu":
        return {}
    return dict(_NO_YNNPACK)


def decode_loop_on_cpu() -> dict:
    """`eigen_kernels_on_cpu()` plus no tree-reduction rewrite: XLA:CPU splits every long reduction (each
    LayerNorm's mean and variance over d_model) into a reduce-window and a reduce, two kernels where one does;
    a config/mini decode step runs ~290 of them (2% of the step at batch 8). fp32 sums of <= 16k terms stay
    accurate without the tree."""
    if jax.default_backend() != "cpu":
        return {}
    return dict(_NO_YNNPACK, xla_disable_hlo_passes="tree_reduction_rewriter")
