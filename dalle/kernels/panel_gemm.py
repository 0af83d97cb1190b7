"""Few-row float32 matmuls that read a panel-packed weight matrix at memory bandwidth (an XLA:CPU custom call).

Why: a decode step multiplies 2-16 rows (batch x guidance branches) by every weight matrix. XLA:CPU's Eigen and
YNNPACK kernels re-pack the weights on every call and read them at 8-10 GB/s at 16 rows, half of what this
machine can stream (config/mini at batch 8: 117 vs 51 ms of matmuls per step, 56 vs 34 ms at batch 1). Packing
each weight once per `generate` call into column panels `[ceil(N / 16), K, 16]` lets a plain AVX-512 loop
(`panel_gemm.cc`) read every panel once, contiguously, for all rows. bfloat16 weights stay bfloat16 in their panels
(half the bytes a step streams) and are widened to float32 in registers; the activations and the accumulation are
float32 either way. float16 weights are packed as float32.

Built on first use by `dalle.kernels.native`; where it cannot run, `available()` is False and callers use
`jnp.dot`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dalle.kernels import native

PANEL = 16  # columns per panel (one AVX-512 vector); must match kPanel in panel_gemm.cc
TARGET = "dalle_panel_gemm"
TARGET_BF16 = "dalle_panel_gemm_bf16"  # the same kernel over bfloat16 panels
_TARGETS = ((TARGET, "DallePanelGemm"), (TARGET_BF16, "DallePanelGemmBf16"))


def available() -> bool:
    """Whether `matmul` can run here (builds and registers the kernel on the first call)."""
    return native.available("panel_gemm", _TARGETS)


def packed_shape(k: int, n: int) -> tuple[int, int, int]:
    return (-(-n // PANEL), k, PANEL)


def pack(w: jax.Array) -> jax.Array:
    """`[K, N]` -> column panels `[ceil(N / 16), K, 16]` (zero-padded columns): bfloat16 for a bfloat16 `w`,
    else float32."""
    k, n = w.shape
    p = packed_shape(k, n)[0]
    dtype = jnp.bfloat16 if w.dtype == jnp.bfloat16 else jnp.float32
    w = jnp.pad(w.astype(dtype), ((0, 0), (0, p * PANEL - n)))
    return jnp.transpose(w.reshape(k, p, PANEL), (1, 0, 2))


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """`x [..., K] @ W [K, n]` in float32 (x cast to float32, a float32 result), with `W` given as `pack(W)`
    (float32 or bfloat16 panels). Rows beyond 16 take extra passes."""
    k = x.shape[-1]
    if packed.shape != packed_shape(k, n):
        raise ValueError(f"packed weights {packed.shape} do not match x [..., {k}] and {n} outputs "
                         f"(expected {packed_shape(k, n)})")
    if not available():
        raise native.KernelUnavailable(native.why_unavailable("panel_gemm", _TARGETS))
    if packed.dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"packed weights are {packed.dtype}, not float32 or bfloat16 (see `pack`)")
    target = TARGET_BF16 if packed.dtype == jnp.bfloat16 else TARGET
    rows = x.reshape(-1, k).astype(jnp.float32)
    out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32))(rows.T, packed)
    return out.reshape(x.shape[:-1] + (n,))
