"""One-query attention products against a heads-major KV cache that read only its filled part (XLA:CPU).

Why: a decode step at position t needs cache positions < t + 1 only, but a batched dot over the static
`[B, H, T, D]` cache reads all T positions, and XLA:CPU runs those small batched products at ~10 GB/s
(config/mini at batch 8: 40 ms of a 118 ms step). `scores` and `mix` take the number of valid positions as a
runtime scalar and stream just those rows. Scaling, masks, relative-position biases and the softmax stay in JAX
between the two calls, so every attention variant keeps its exact semantics (positions at or beyond `length`
score 0 here and must be masked by the caller, as causal attention does).

Built on first use by `dalle.kernels.native`; where it cannot run, `available()` is False and callers use einsums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dalle.kernels import native

_TARGETS = (("dalle_cache_scores", "DalleCacheScores"), ("dalle_cache_mix", "DalleCacheMix"))


def available() -> bool:
    """Whether `scores` and `mix` can run here (builds and registers the kernels on the first call)."""
    return native.available("cache_attention", _TARGETS)


def _check() -> None:
    if not available():
        raise native.KernelUnavailable(native.why_unavailable("cache_attention", _TARGETS))


def scores(q: jax.Array, k: jax.Array, length: jax.Array) -> jax.Array:
    """`q [B, H, D]`, `k [B, H, T, D]` -> `[B, H, T]` dot products for positions `< length` (0 beyond)."""
    _check()
    b, h, t, d = k.shape
    if q.shape != (b, h, d):
        raise ValueError(f"q {q.shape} does not match k {k.shape}")
    out = jax.ShapeDtypeStruct((b, h, t), jnp.float32)
    return jax.ffi.ffi_call("dalle_cache_scores", out)(q.astype(jnp.float32), k.astype(jnp.float32),
                                                       jnp.asarray(length, jnp.int32))


def mix(w: jax.Array, v: jax.Array, length: jax.Array) -> jax.Array:
    """`w [B, H, T]`, `v [B, H, T, D]` -> `[B, H, D]` weighted sums over positions `< length`."""
    _check()
    b, h, t, d = v.shape
    if w.shape != (b, h, t):
        raise ValueError(f"w {w.shape} does not match v {v.shape}")
    out = jax.ShapeDtypeStruct((b, h, d), jnp.float32)
    return jax.ffi.ffi_call("dalle_cache_mix", out)(w.astype(jnp.float32), v.astype(jnp.float32),
                                                    jnp.asarray(length, jnp.int32))
