"""Few-row float32 matmuls that read a panel-packed weight matrix at memory bandwidth (an XLA:CPU custom call).

Why: a decode step multiplies 2-16 rows (batch x guidance branches) by every weight matrix. XLA:CPU's Eigen and
YNNPACK kernels re-pack the weights on every call and read them at 8-10 GB/s at 16 rows, half of what this
machine can stream (config/mini at batch 8: 117 vs 51 ms of matmuls per step, 56 vs 34 ms at batch 1). Packing
each weight once per `generate` call into column panels `[ceil(N / 16), K, 16]` lets a plain AVX-512 loop
(`panel_gemm.cc`) read every panel once, contiguously, for all rows.

Built on first use by `dalle.kernels.native`; where it cannot run, `available()` is False and callers use
`jnp.dot`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dalle.kernels import native

PANEL = 16  # columns per panel (one AVX-512 vector); must match kPanel in panel_gemm.cc
TARGET = "dalle_panel_gemm"
_TARGETS = ((TARGET, "DallePanelGemm"),)


def available() -> bool:
    """Whether `matmul` can run here (builds and registers the kernel on the first call)."""
    return native.available("panel_gemm", _TARGETS)


def packed_shape(k: int, n: int) -> tuple[int, int, int]:
    return (-(-n // PANEL), k, PANEL)


def pack(w: jax.Array) -> jax.Array:
    """`[K, N]` -> column panels `[ceil(N / 16), K, 16]` (zero-padded columns)."""
    k, n = w.shape
    p = packed_shape(k, n)[0]
    w = jnp.pad(w.astype(jnp.float32), ((0, 0), (0, p * PANEL - n)))
    return jnp.transpose(w.reshape(k, p, PANEL), (1, 0, 2))


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """`x [..., K] @ W [K, n]` in float32, with `W` given as `pack(W)`. Rows beyond 16 take extra passes."""
    k = x.shape[-1]
    if packed.shape != packed_shape(k, n):
        raise ValueError(f"packed weights {packed.shape} do not match x [..., {k}] and {n} outputs "
                         f"(expected {packed_shape(k, n)})")
    if not available():
        raise native.KernelUnavailable(native.why_unavailable("panel_gemm", _TARGETS))
    rows = x.reshape(-1, k).astype(jnp.float32)
    out = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32))(rows.T, packed)
    return out.reshape(x.shape[:-1] + (n,))
