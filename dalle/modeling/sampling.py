"""Image-token sampling: one jitted decode loop with a KV cache, for both model kinds.

    codes = generate(model, params, text_tokens, jax.random.PRNGKey(0), num_images=4, condition_scale=3.0, top_k=50)
    # int32 [B * 4, image_length], codes in [0, image_vocab_size): ready for the VQGAN decoder

Design (why it is fast):
  * the text encoder (DalleBart) or the text prefix (decoder-only) runs once per *prompt*, and the result (cross
    K/V or the prefix cache) is repeated for the `num_images` samples of that prompt;
  * the decode loop is one `lax.fori_loop` inside one `jax.jit`, compiled once per (batch, lengths, num_images,
    prompt length, guided?, greedy?, top_k, top_p on?, dtype, mesh) and cached on the model object; the float
    knobs (condition_scale, temperature, top_p) are traced, so changing them never recompiles;
  * each step reads every weight once: the layers run unrolled on per-layer weight arrays sliced from the stacked
    parameters once per call (a scan over stacked weights makes XLA copy each layer's weights out of the stack
    every step: 2x slower at batch 1 on CPU; `unroll_layers=False` keeps the scan), against a stacked
    `[L, B, T, H, D]` KV cache written in place;
  * super-conditioning puts the conditional and unconditional rows in the *same* batch (one decoder call per
    step, weights read once for both): `logits = uncond + s * (cond - uncond)`.

Unconditional prompt convention: the all-padding caption (every text token = 0). dalle-mini uses the tokenized
empty string (`<s></s>`); a converted dalle-mini model gets that exact prompt by passing `uncond_tokens`.

Randomness: the key for row `r` at image position `t` is `fold_in(fold_in(rng, t), r)`, so results depend only
on the seed and the row, never on compilation or on the mesh.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dalle import compiler_options, sharding
from dalle.kernels import cache_attention, panel_gemm
from dalle.modeling import layers


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: jax.Array | float | None = None,
                  temperature: jax.Array | float = 1.0) -> jax.Array:
    """Temperature, then top-k, then nucleus (top-p) filtering (HF's order); filtered entries become -inf.

    Top-p keeps the smallest set of most likely tokens whose probability reaches `top_p` (always at least one).
    """
    logits = logits.astype(jnp.float32) / temperature
    if top_k and top_k > 0:
        logits = jnp.where(logits < kth_largest(logits, top_k), -jnp.inf, logits)
    if top_p is not None:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
        keep = before < top_p
        keep = keep.at[..., 0].set(True)
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def _order_key(x: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negative floats reversed; -0.0 just below +0.0)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    negative = (bits >> 31) == 1
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def kth_largest(x: jax.Array, k: int) -> jax.Array:
    """The exact k-th largest value along the last axis, `[..., V] -> [..., 1]` (ties count: it equals
    `lax.top_k(x, k)[0][..., -1:]`).

    Bisection over the 32-bit order key: 32 fused compare-and-count passes over the row. On XLA:CPU `lax.top_k`
    is a full sort of the row: 21 vs 1.9 ms for 8 x 16384 logits (config/mini at batch 8), 11x slower.
    """
    key = _order_key(x.astype(jnp.float32))
    lo = jnp.zeros(x.shape[:-1] + (1,), jnp.uint32)  # invariant: count(key >= lo) >= k
    hi = jnp.full(x.shape[:-1] + (1,), 0xFFFFFFFF, jnp.uint32)  # the answer is <= hi
    for _ in range(32):
        gap = hi - lo
        mid = lo + (gap >> 1) + (gap & 1)  # ceil midpoint without overflow
        enough = jnp.sum(key >= mid, axis=-1, keepdims=True) >= k
        lo = jnp.where(enough, mid, lo)
        hi = jnp.where(enough, hi, mid - 1)
    # lo is the key of the k-th largest element: return that element.
    return jnp.max(jnp.where(key == lo, x, -jnp.inf), axis=-1, keepdims=True).astype(x.dtype)


def sample_tokens(logits: jax.Array, rng: jax.Array, step: jax.Array, *, greedy: bool, top_k: int,
                  top_p: jax.Array | None, temperature: jax.Array) -> jax.Array:
    """`[N, V]` logits -> `[N]` int32 tokens, row r drawn with `fold_in(fold_in(rng, step), r)`."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits, top_k=top_k, top_p=top_p, temperature=temperature)
    step_key = jax.random.fold_in(rng, step)
    keys = jax.vmap(lambda r: jax.random.fold_in(step_key, r))(jnp.arange(logits.shape[0]))
    return jax.vmap(lambda k, l: jax.random.categorical(k, l))(keys, logits).astype(jnp.int32)


def _build(model, *, batch: int, text_length: int, num_images: int, prompt_length: int, guided: bool,
           greedy: bool, top_k: int, use_top_p: bool, compute_dtype: str, return_logits: bool, unroll_layers: bool,
           decode_kernels: str, shared_uncond: bool, nested: bool):
    length = model.image_length
    stacked_model = model
    if unroll_layers:
        model = model.unrolled()

    def run(params, text_tokens, uncond_tokens, image_prompt, rng, condition_scale, temperature, top_p):
        if unroll_layers:
            params = stacked_model.unstack_params(params)  # once per call, outside the decode loop
        if decode_kernels == "native":
            params = layers.with_panel_kernels(params, compute_dtype)  # packed once per call, read by each step
        rows = batch * num_images
        if guided and shared_uncond:
            # Every unconditional row is the same prompt with the same (BOS-only) prefix: encode it once.
            text_all = jnp.concatenate([text_tokens, uncond_tokens[:1]], axis=0)
            prompt_all = jnp.concatenate([image_prompt, image_prompt[:1]], axis=0)
        elif guided:
            text_all = jnp.concatenate([text_tokens, uncond_tokens], axis=0)
            prompt_all = jnp.concatenate([image_prompt, image_prompt], axis=0)
        else:
            text_all, prompt_all = text_tokens, image_prompt
        bos = jnp.full((text_all.shape[0], 1), model.bos_id, jnp.int32)
        prefix = jnp.concatenate([bos, prompt_all], axis=1)
        # Rows: [cond prompt 0 x n, cond prompt 1 x n, ..., uncond prompt 0 x n, ...].
        logits, cache = model.prefill(params, text_all, prefix, num_images, compute_dtype)
        if guided and shared_uncond:
            rows_idx = jnp.concatenate([jnp.arange(rows), rows + jnp.tile(jnp.arange(num_images), batch)])
            logits, cache = logits[rows_idx], model.take_cache_rows(cache, rows_idx)

        def combine(step_logits):
            if not guided:
                return step_logits
            cond, uncond = step_logits[:rows], step_logits[rows:]
            return uncond + condition_scale * (cond - uncond)

        def pick(step_logits, t):
            return sample_tokens(combine(step_logits), rng, t, greedy=greedy, top_k=top_k,
                                 top_p=top_p if use_top_p else None, temperature=temperature)

        codes = jnp.zeros((rows, length), jnp.int32)
        codes = jax.lax.dynamic_update_slice(codes, jnp.repeat(image_prompt, num_images, axis=0), (0, 0))
        all_logits = jnp.zeros((rows, length, logits.shape[-1]), jnp.float32) if return_logits else None

        def body(t, carry):
            codes, logits, cache, all_logits = carry
            if return_logits:
                all_logits = jax.lax.dynamic_update_slice(all_logits, combine(logits)[:, None], (0, t, 0))
            token = pick(logits, t)
            codes = jax.lax.dynamic_update_slice(codes, token[:, None], (0, t))
            feed = jnp.concatenate([token, token]) if guided else token
            # Code t is the decoder input at position t + 1 (position 0 holds BOS).
            step_logits, cache = model.decode_step(params, feed[:, None], t + 1, cache, compute_dtype, decode_kernels)
            return codes, step_logits[:, 0], cache, all_logits

        codes, logits, cache, all_logits = jax.lax.fori_loop(
            prompt_length, length - 1, body, (codes, logits, cache, all_logits))
        if return_logits:
            all_logits = jax.lax.dynamic_update_slice(all_logits, combine(logits)[:, None], (0, length - 1, 0))
        codes = jax.lax.dynamic_update_slice(codes, pick(logits, length - 1)[:, None], (0, length - 1))
        return (codes, all_logits) if return_logits else codes

    # Options are only allowed on a top-level jit: a caller that jits `generate` itself passes them (see below).
    return jax.jit(run) if nested else jax.jit(run, compiler_options=decode_compiler_options())


def decode_compiler_options() -> dict:
    """XLA options for a jit that runs the decode loop (pass them when you wrap `generate` in your own `jax.jit`):
    on CPU, Eigen dots instead of YNNPACK's, whose kernels re-read every weight matrix per block of the few rows a
    step multiplies (config/mini at batch 8: 20-25% slower per step), and no tree-reduction rewrite (see
    `compiler_options.decode_loop_on_cpu`)."""
    return compiler_options.decode_loop_on_cpu()


def generate(
    model: Any,
    params: Any,
    text_tokens: Any,
    rng: jax.Array,
    *,
    num_images: int = 1,
    condition_scale: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    image_prompt: Any | None = None,
    uncond_tokens: Any | None = None,
    compute_dtype: str = "float32",
    guidance: bool | None = None,
    return_logits: bool = False,
    unroll_layers: bool = True,
    decode_kernels: str = "auto",
) -> jax.Array:
    """Samples `num_images` code grids per prompt -> int32 `[B * num_images, image_length]` (prompt-major rows).

    text_tokens: int32 `[B, max_text_length]` (pad 0).
    condition_scale: super-conditioning scale s; 1.0 disables the unconditional branch (half the work).
    top_k (0 = off), top_p (1.0 = off), temperature (0.0 = greedy argmax).
    image_prompt: int32 `[B, P]` first codes of each image (e.g. the top rows of an encoded image); they are kept
      as given and only the remaining `image_length - P` codes are sampled (DALL·E's image completion).
    uncond_tokens: `[B, max_text_length]` unconditional prompts (default: all padding).
    guidance: run the unconditional branch (None: exactly when condition_scale != 1; True with s = 1 computes
      `uncond + 1 * (cond - uncond)`, which must reproduce the conditional model).
    return_logits: also return the (guided) logits each code was drawn from, `[rows, image_length, V]` (tests).
    unroll_layers: decode with one module per layer on per-layer weights (default; 2x faster per token on CPU
      than scanning over stacked weights, see `Model.unrolled`) instead of `hk.layer_stack`.
    decode_kernels: "native": decode steps use `dalle.kernels`' CPU kernels: matmuls against weights packed once
      per call (`panel_gemm`, 1.6-2.3x faster than XLA's at 2-16 rows) and attention that reads only the filled
      part of the KV cache (`cache_attention`); an error where they cannot run. "xla": XLA's own ops. "auto"
      (default): native wherever it can run (float32 or bfloat16 compute, XLA:CPU with a C++ compiler that
      built the kernels, no multi-device mesh), else xla (`resolve_decode_kernels`). bfloat16 steps read
      bfloat16 weight panels (float32 accumulation) and keep XLA's attention (the cache kernels are float32);
      float16 stays on XLA's ops.
    Works under `dalle.sharding.use_mesh(mesh)` with sharded params; compiled functions are cached per shape.
    """
    text_tokens = jnp.asarray(text_tokens, jnp.int32)
    batch, text_length = text_tokens.shape
    if text_length != model.max_text_length:
        raise ValueError(f"text_tokens has length {text_length}, the model expects {model.max_text_length}")
    if num_images < 1:
        raise ValueError(f"num_images = {num_images} must be >= 1")
    if image_prompt is None:
        image_prompt = jnp.zeros((batch, 0), jnp.int32)
    image_prompt = jnp.asarray(image_prompt, jnp.int32)
    if image_prompt.ndim != 2 or image_prompt.shape[0] != batch:
        raise ValueError(f"image_prompt must be [batch={batch}, P], got {image_prompt.shape}")
    prompt_length = image_prompt.shape[1]
    if prompt_length >= model.image_length:
        raise ValueError(f"image_prompt has {prompt_length} codes; the image has only {model.image_length}")
    # One unconditional prompt for all rows (the default, or a single row given) is encoded once.
    shared_uncond = prompt_length == 0 and (uncond_tokens is None or np.ndim(uncond_tokens) == 1
                                            or np.shape(uncond_tokens)[0] == 1)
    if uncond_tokens is None:
        uncond_tokens = jnp.zeros_like(text_tokens)
    uncond_tokens = jnp.broadcast_to(jnp.asarray(uncond_tokens, jnp.int32), text_tokens.shape)
    if top_k < 0 or top_k > model.image_vocab_size:
        raise ValueError(f"top_k = {top_k} must be in [0, {model.image_vocab_size}]")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p = {top_p} must be in (0, 1]")
    if temperature < 0:
        raise ValueError(f"temperature = {temperature} must be >= 0")
    decode_kernels = resolve_decode_kernels(decode_kernels, compute_dtype)
    static = dict(batch=batch, text_length=text_length, num_images=int(num_images), prompt_length=prompt_length,
                  guided=(float(condition_scale) != 1.0) if guidance is None else bool(guidance), greedy=float(temperature) == 0.0, top_k=int(top_k),
                  use_top_p=float(top_p) < 1.0, compute_dtype=compute_dtype, return_logits=bool(return_logits),
                  unroll_layers=bool(unroll_layers), decode_kernels=decode_kernels,
                  shared_uncond=shared_uncond, nested=_traced(params, text_tokens, image_prompt, rng))
    return _generate(model, params, text_tokens, uncond_tokens, image_prompt, rng, condition_scale, temperature,
                     top_p, static)


DECODE_KERNELS = ("auto",) + layers.DECODE_KERNELS


def resolve_decode_kernels(decode_kernels: str, compute_dtype: str = "float32") -> str:
    """"auto" | "native" | "xla" -> the kernels a decode step uses ("native" or "xla") under the current mesh.

    Native needs float32 or bfloat16 compute (not float16), a single device and `dalle.kernels` built (XLA:CPU
    and a C++ compiler, see `dalle.kernels.native`); "auto" picks it exactly then, "native" raises where it cannot
    run."""
    if decode_kernels not in DECODE_KERNELS:
        raise ValueError(f"decode_kernels = {decode_kernels!r} is not one of {DECODE_KERNELS}")
    if decode_kernels == "xla":
        return "xla"
    built = panel_gemm.available() and cache_attention.available()
    possible = compute_dtype in ("float32", "bfloat16") and _single_device() and built
    if decode_kernels == "native" and not possible:
        raise ValueError("decode_kernels='native' needs float32 or bfloat16 compute, no multi-device mesh and the "
                         f"CPU kernels (compute_dtype={compute_dtype!r}, mesh={sharding.current_mesh()}, "
                         f"kernels built: {built})")
    return "native" if possible else "xla"


def _single_device() -> bool:
    mesh = sharding.current_mesh()
    return mesh is None or mesh.size == 1


def _traced(*args) -> bool:
    """Whether any input is a tracer, i.e. `generate` runs inside a caller's jit (any argument may be the traced one)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(args))


def limit_compiled(model, max_loops: int | None) -> None:
    """Keeps at most `max_loops` compiled decode loops for `model` (None: all, the default), dropping the least
    recently used first. Each distinct static setting (num_images, top_k, ...) compiles a loop that holds its
    executable; a server that takes those settings from requests (`dalle serve --max-compiled`) needs the bound."""
    if max_loops is not None and max_loops < 1:
        raise ValueError(f"max_loops = {max_loops} must be >= 1 (or None: no bound)")
    model._generate_cache_limit = max_loops
    _evict_compiled(model)


def _evict_compiled(model) -> None:
    limit = getattr(model, "_generate_cache_limit", None)
    while limit is not None and len(model._generate_cache) > limit:
        del model._generate_cache[next(iter(model._generate_cache))]  # dicts keep order: the first is the oldest


def _generate(model, params, text_tokens, uncond_tokens, image_prompt, rng, condition_scale, temperature, top_p,
              static: dict):
    key = (tuple(sorted(static.items())), sharding.current_mesh())
    fn = model._generate_cache.pop(key, None)  # re-inserted last: most recently used
    if fn is None:
        fn = _build(model, **static)
    model._generate_cache[key] = fn
    _evict_compiled(model)
    return fn(params, text_tokens, uncond_tokens, image_prompt, rng, jnp.float32(condition_scale),
              jnp.float32(max(float(temperature), 1e-6)), jnp.float32(top_p))


def trace_count(model) -> int:
    """How many decode loops have been compiled for this model (tests check there is no recompilation)."""
    return int(sum(getattr(f, "_cache_size", lambda: 1)() for f in model._generate_cache.values()))


__all__ = ["generate", "resolve_decode_kernels", "DECODE_KERNELS", "decode_compiler_options", "filter_logits",
           "kth_largest", "limit_compiled", "sample_tokens", "trace_count"]
