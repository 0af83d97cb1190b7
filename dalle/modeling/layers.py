"""Transformer pieces shared by the encoder-decoder (DalleBart) and the decoder-only model.

Plain Haiku modules in the AlphaFold / grok-1 style. Every architecture switch of dalle-mini's `DalleBartConfig`
is expressed through one frozen `TransformerSpec`, so a block is fully described by data and the same code serves
the text encoder, the image decoder (with cross-attention) and the single-stream decoder.

Conventions, chosen so that published dalle-mini weights convert one to one (see convert_dalle_mini.py):
  * dense kernels are stored `[in, out]`; attention projections are fused over heads (`[d, heads * head_dim]`);
  * parameters are float32; a `jmp.Policy` casts them to the compute dtype at use (bf16 training keeps fp32
    master weights); normalisation statistics and softmaxes are always computed in float32;
  * masks are additive biases of a large *finite* negative value: an all-padding caption (our unconditional
    prompt) then gives uniform attention instead of NaNs, and rows with at least one valid key are bitwise the
    same as with -inf.

Incremental decoding uses a pre-allocated KV cache held *outside* the modules, heads-major
(`[batch, heads, length, head_dim]` per layer: a one-token step's attention is then a batched matrix-vector product
that reads the cache in place). A block writes its new keys/values into its layer's cache with one
`dynamic_update_slice`, attends over the whole cache (positions not yet written are masked) and returns the
updated cache. An unrolled stack keeps one cache array per layer (`PerLayer`), so every write is in place inside
the decode loop; a scanned stack keeps them stacked with a leading layer axis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import jmp

from dalle import sharding
from dalle.kernels import cache_attention, panel_gemm
from dalle.modeling import norm_placement
from dalle.modeling.norm_placement import LN_TYPES

MASK_VALUE = -1e9  # finite "minus infinity" for attention logits (always float32)
NORM_EPS = 1e-5  # dalle-mini uses 1e-5 for every LayerNorm / RMSNorm

DECODE_KERNELS = ("xla", "native")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_exact", "swish", "silu", "smelu", "smelu_dallemini", "relu")


# ------------------------------------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------------------------------------
@jax.custom_jvp
def smelu(x: jax.Array) -> jax.Array:
    """Smooth ReLU (beta = 1), "Real World Large Scale Recommendation Systems Reproducibility and Smooth
    Activations" (arXiv:2202.06499): 0 below -1, x above 1, (x + 1)^2 / 4 in between."""
    beta = 1.0
    return jnp.where(x <= -beta, 0.0, jnp.where(x >= beta, x, jnp.square(x + beta) / (4 * beta)))


@smelu.defjvp
def _smelu_jvp(primals, tangents):
    # The analytic derivative (dalle-mini's custom jvp passes the tangent through unchanged, which is not
    # SmeLU's derivative).
    (x,), (g,) = primals, tangents
    beta = 1.0
    grad = jnp.where(x <= -beta, 0.0, jnp.where(x >= beta, 1.0, (x + beta) / (2 * beta)))
    return smelu(x), g * grad.astype(g.dtype)


def smelu_dallemini(x: jax.Array) -> jax.Array:
    """dalle-mini's `smelu` exactly as published: it zeroes x <= -1 *before* the quadratic branch, so it returns
    0.25 (not 0) there. Only for converted checkpoints that ask for it (`activation_function="smelu_dallemini"`)."""
    x = jnp.where(x <= -1.0, 0.0, x)
    return jnp.where(x >= 1.0, x, jnp.square(x + 1.0) / 4.0)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """HF's ACT2FN names as dalle-mini uses them: `gelu` is the exact (erf) GELU, `gelu_new` the tanh one."""
    if name in ("gelu", "gelu_exact"):
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "gelu_new":
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name in ("swish", "silu"):
        return jax.nn.swish
    if name == "smelu":
        return smelu
    if name == "smelu_dallemini":
        return smelu_dallemini
    if name == "relu":
        return jax.nn.relu
    raise ValueError(f"unknown activation_function {name!r} (known: {ACTIVATIONS})")


# ------------------------------------------------------------------------------------------------------------------
# Spec
# ------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TransformerSpec:
    """Everything a block needs, resolved from a model config by `from_config` (see dalle_bart.py /
    decoder_only.py)."""

    d_model: int
    num_heads: int
    ffn_dim: int
    ln_type: str = "layernorm"
    ln_positions: str = "normformer"
    use_glu: bool = True
    use_bias: bool = False
    use_head_scale: bool = False
    use_cosine_attention: bool = False
    tau_init: float = 0.05
    use_swin_position_embeddings: bool = False
    sinkhorn_iters: int = 1
    force_ln_scale: bool = False
    activation_function: str = "gelu"
    init_std: float = 0.02
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    norm_eps: float = NORM_EPS  # BERT / RoBERTa encoders use 1e-12 (model.encoder_layer_norm_eps)
    # DeepNet: residual * alpha + f(x), and v/out/ffn kernels initialised with gain beta.
    residual_gain: float = 1.0
    init_gain: float = 1.0  # gain of v_proj/out_proj (self-attention) and FFN kernels (deepnet or subln init)
    cross_init_gain: float = 1.0  # same for the cross-attention (deepnet only; subln init skips it)
    is_encoder: bool = False  # dalle-mini normalises slightly differently in encoder and decoder layers
    has_cross_attention: bool = False
    self_length: int = 0  # query/key length of self-attention (for the Swin bias table)
    cross_length: int = 0  # key length of cross-attention (for the Swin bias table)
    # How a decode step computes, chosen per call by the sampler (not a config key): "native" makes float32
    # `Dense` layers multiply with `dalle.kernels.panel_gemm` against the `kernel_panels` that
    # `with_panel_kernels` adds, and one-query attention over a heads-major cache use `dalle.kernels.
    # cache_attention` (it reads only the filled positions); "xla" uses XLA's own dots everywhere.
    decode_kernels: str = "xla"

    def __post_init__(self):
        norm_placement.get(self.ln_positions)  # raises, naming the known placements
        if self.decode_kernels not in DECODE_KERNELS:
            raise ValueError(f"unknown decode_kernels {self.decode_kernels!r} (known: {DECODE_KERNELS})")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], **per_side: Any) -> "TransformerSpec":
        """Every field named like a `model` config key (d_model, ln_type, use_glu, dropout, ...) is read from
        `cfg`; `per_side` sets the rest and overrides (a side's heads and FFN width, its gains and lengths)."""
        shared = {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name not in per_side and f.name in cfg}
        return cls(**shared, **per_side)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def placement(self) -> norm_placement.NormPlacement:
        """Where this layer's norms are (the `ln_positions` row of `norm_placement.PLACEMENTS`)."""
        return norm_placement.get(self.ln_positions)

    @property
    def side(self) -> str:
        return "encoder" if self.is_encoder else "decoder"

    def norm(self, site: str, name: str) -> "Norm":
        """The norm at `site` (one of `norm_placement.SITES`), with or without a scale as that site wants."""
        return Norm(self.ln_type, use_scale=norm_placement.use_scale(site, self.force_ln_scale), name=name,
                    eps=self.norm_eps)


# ------------------------------------------------------------------------------------------------------------------
# Basic modules
# ------------------------------------------------------------------------------------------------------------------
class Norm(hk.Module):
    """LayerNorm (scale + bias) or RMSNorm (scale only), statistics in float32.

    `use_scale=False` is how dalle-mini drops the scale of norms followed by a dense layer (NormFormer), which would
    be redundant with the kernel; such norms then carry only a bias.
    """

    def __init__(self, ln_type: str, use_scale: bool = True, name: str | None = None, eps: float = NORM_EPS):
        super().__init__(name=name)
        if ln_type not in LN_TYPES:
            raise ValueError(f"unknown ln_type {ln_type!r} (known: {LN_TYPES})")
        self.ln_type = ln_type
        self.use_scale = use_scale
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x = x.astype(jnp.float32)
        dim = x.shape[-1]
        if self.ln_type == "layernorm":
            mean = jnp.mean(x, axis=-1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
            y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        else:
            y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        if self.use_scale:
            y = y * hk.get_parameter("scale", [dim], jnp.float32, init=jnp.ones)
        if self.ln_type == "layernorm":
            y = y + hk.get_parameter("bias", [dim], jnp.float32, init=jnp.zeros)
        return y.astype(dtype)


class Dense(hk.Module):
    """`x @ kernel (+ bias)` with a float32 kernel cast to the compute dtype by the policy.

    `decode_kernels="native"` (decode steps only, see `TransformerSpec.decode_kernels`): float32 and bfloat16
    inputs are multiplied by `dalle.kernels.panel_gemm` (float32 accumulation, the result cast back to the input's
    dtype) against the `kernel_panels` parameter (`with_panel_kernels`); float16 ones use XLA's dot.
    """

    def __init__(self, features: int, policy: jmp.Policy, use_bias: bool = False, stddev: float = 0.02,
                 name: str | None = None, *, decode_kernels: str = "xla"):
        super().__init__(name=name)
        if decode_kernels not in DECODE_KERNELS:
            raise ValueError(f"unknown decode_kernels {decode_kernels!r} (known: {DECODE_KERNELS})")
        self.features = features
        self.policy = policy
        self.use_bias = use_bias
        self.stddev = stddev
        self.decode_kernels = decode_kernels

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.decode_kernels == "native" and x.dtype in (jnp.float32, jnp.bfloat16):
            # The weight was packed once per generate call, next to the kernel (float32 or bfloat16 panels).
            panels = hk.get_parameter("kernel_panels", list(panel_gemm.packed_shape(x.shape[-1], self.features)),
                                      jnp.float32)
            y = panel_gemm.matmul(x, panels, self.features).astype(x.dtype)
            if self.use_bias:
                y = y + hk.get_parameter("bias", [self.features], jnp.float32, init=jnp.zeros).astype(x.dtype)
            return y
        kernel = hk.get_parameter("kernel", [x.shape[-1], self.features], jnp.float32,
                                  init=hk.initializers.RandomNormal(self.stddev))
        # A 2-D matmul: XLA:CPU runs the backward of a [batch, length, d] contraction several times slower.
        y = jnp.dot(x.reshape(-1, x.shape[-1]), self.policy.cast_to_compute(kernel))
        y = y.reshape(x.shape[:-1] + (self.features,))
        if self.use_bias:
            y = y + self.policy.cast_to_compute(hk.get_parameter("bias", [self.features], jnp.float32, init=jnp.zeros))
        return y


def with_panel_kernels(params: Any, compute_dtype: str = "float32") -> Any:
    """Adds `kernel_panels` (the packed `kernel`, what `Dense(decode_kernels="native")` reads) to every Dense
    module: 2-D kernels, and 3-D ones stacked by a scanned layer stack (packed per layer). Packs every such
    weight; XLA drops the packing of those the traced function never reads. Panels are bfloat16 for bfloat16
    kernels or a bfloat16 `compute_dtype` (the kernel cast as XLA's path casts it), else float32."""
    out = {}
    for module, leaves in params.items():
        leaves = dict(leaves)
        kernel = leaves.get("kernel")
        if compute_dtype == "bfloat16" and kernel is not None:
            kernel = kernel.astype(jnp.bfloat16)
        ndim = getattr(kernel, "ndim", 0)
        if ndim == 2:
            leaves["kernel_panels"] = panel_gemm.pack(kernel)
        elif ndim == 3 and "/layers/layer/" in module:
            leaves["kernel_panels"] = jax.vmap(panel_gemm.pack)(kernel)
        out[module] = leaves
    return out


class Embed(hk.Module):
    """Lookup table `[vocab, d]` (normal(init_std) init as dalle-mini)."""

    def __init__(self, vocab_size: int, dim: int, policy: jmp.Policy, stddev: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size, self.dim, self.policy, self.stddev = vocab_size, dim, policy, stddev

    @property
    def table(self) -> jax.Array:
        return hk.get_parameter("embedding", [self.vocab_size, self.dim], jnp.float32,
                                init=hk.initializers.RandomNormal(self.stddev))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.policy.cast_to_compute(jnp.take(self.table, ids, axis=0))


def dropout(x: jax.Array, rate: float, is_training: bool) -> jax.Array:
    if not is_training or rate <= 0.0:
        return x
    return hk.dropout(hk.next_rng_key(), rate, x)


# ------------------------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------------------------
class KV(NamedTuple):
    """Keys and values of one layer: `[batch, length, heads, head_dim]` as projected, or heads-major
    `[batch, heads, length, head_dim]` in a decode cache; stacked with a leading layer axis, or `PerLayer`."""

    k: jax.Array
    v: jax.Array


class PerLayer(tuple):
    """One value per layer of an unrolled stack (e.g. each layer's own KV cache array).

    A stacked `[layers, ...]` cache would be sliced for every layer and re-stacked after each decode step, which
    makes XLA copy the whole cache every step; separate arrays are updated in place.
    """


jax.tree_util.register_pytree_node(PerLayer, lambda t: (tuple(t), None), lambda _, children: PerLayer(children))


def take_rows(x: Any, rows: jax.Array) -> Any:
    """Batch rows `rows` of a decode-cache part: a `PerLayer` of KV (`[B, ...]` each), stacked KV
    (`[layers, B, ...]`) or a per-row array (`[B, ...]`, e.g. a padding mask)."""
    if isinstance(x, PerLayer):
        return PerLayer(KV(kv.k[rows], kv.v[rows]) for kv in x)
    if isinstance(x, KV):
        return KV(x.k[:, rows], x.v[:, rows])
    return x[rows]


def decode_cache(kv: KV, length: int, repeats: int, per_layer: bool) -> KV | PerLayer:
    """Prefix keys/values `[layers, B, S, H, D]` -> a heads-major cache of `length` positions (zeros beyond the
    prefix), every row repeated `repeats` times: stacked `[layers, B * repeats, H, length, D]` or `PerLayer`."""

    def grow(a: jax.Array) -> jax.Array:
        a = jnp.swapaxes(a, 2, 3)
        a = jnp.pad(a, ((0, 0), (0, 0), (0, 0), (0, length - a.shape[3]), (0, 0)))
        return jnp.repeat(a, repeats, axis=1)

    k, v = grow(kv.k), grow(kv.v)
    if not per_layer:
        axes = ("layers", "batch", "heads", "length", "kv")
        return KV(sharding.constrain(k, axes), sharding.constrain(v, axes))
    axes = ("batch", "heads", "length", "kv")
    return PerLayer(KV(sharding.constrain(k[i], axes), sharding.constrain(v[i], axes)) for i in range(k.shape[0]))


def key_mask_bias(key_mask: jax.Array) -> jax.Array:
    """`[B, K]` bool -> `[B, 1, 1, K]` additive bias."""
    return jnp.where(key_mask, 0.0, MASK_VALUE).astype(jnp.float32)[:, None, None, :]


class AttentionKernel(NamedTuple):
    """How queries meet keys and values; everything else in `Attention` is the same whichever kernel runs."""

    scores: Callable[[jax.Array, jax.Array], jax.Array]  # (q [B, S, H, D], k) -> float32 logits [B, H, S, K]
    mix: Callable[[jax.Array, jax.Array], jax.Array]  # (weights [B, H, S, K], v) -> [B, S, H, D]


def attention_kernel(decode_kernels: str, *, heads_major: bool, q: jax.Array, filled: jax.Array | int
                     ) -> AttentionKernel:
    """The products for one attention call.

    Keys/values are token-major `[B, K, H, D]` as projected (training, prefill) or heads-major `[B, H, K, D]` (a
    decode cache, precomputed cross-attention keys). With `decode_kernels="native"`, a float32 one-query step
    over heads-major keys uses `dalle.kernels.cache_attention`, which reads only the first `filled` positions
    (the rest of a cache is masked anyway); everything else uses XLA's dots.
    """
    if decode_kernels == "native" and heads_major and q.shape[1] == 1 and q.dtype == jnp.float32:
        return AttentionKernel(lambda q, k: cache_attention.scores(q[:, 0], k, filled)[:, :, None, :],
                               lambda w, v: cache_attention.mix(w[:, :, 0], v, filled)[:, None])
    if heads_major:
        return AttentionKernel(lambda q, k: jnp.einsum("bqhd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32),
                               lambda w, v: jnp.einsum("bhqk,bhkd->bqhd", w, v))
    return AttentionKernel(lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32),
                           lambda w, v: jnp.einsum("bhqk,bkhd->bqhd", w, v))


class Attention(hk.Module):
    """Multi-head attention with dalle-mini's options.

    * `use_head_scale` (NormFormer): a learned per-head scale of the attention output.
    * `use_cosine_attention` + `tau_init` (Swin v2): q and k are L2-normalised and the logits divided by tau
      (a constant, as in dalle-mini, where a learned tau diverged).
    * `use_swin_position_embeddings`: a learned bias table `[q_length, k_length * heads]` added to the logits,
      indexed by the absolute query position (which also makes it well defined for one-token cached steps).
    * `sinkhorn_iters > 1` (Sinkformer, encoder self-attention only): alternate row/column normalisation in log
      space instead of one softmax.
    * a placement with `attn_mid` (Magneto's sub-LN): a norm on the merged heads before `out_proj`
      (self-attention only).

    A call is three steps: the projections (`_project_qkv`: q/k/v, cosine normalisation, the cache write), the
    attention itself (`_attend`, whose products come from `attention_kernel`), and `_project_out`.
    """

    def __init__(self, spec: TransformerSpec, policy: jmp.Policy, *, is_cross: bool, causal: bool,
                 name: str | None = None):
        super().__init__(name=name)
        self.spec = spec
        self.policy = policy
        self.is_cross = is_cross
        self.causal = causal

    def __call__(
        self,
        x: jax.Array,
        *,
        q_positions: jax.Array,
        key_mask: jax.Array | None = None,
        kv_input: jax.Array | None = None,
        kv: KV | None = None,
        cache: KV | None = None,
        cache_index: jax.Array | int = 0,
        is_training: bool = False,
    ) -> tuple[jax.Array, KV]:
        """Attends from `x` `[B, S, d]` (absolute positions `q_positions` `[S]`).

        Keys come from `kv` (precomputed and heads-major `[B, H, K, D]`, e.g. cross-attention during decoding),
        else from `kv_input` (defaults to `x`). With `cache` (heads-major `[B, H, T, D]`, filled below
        `cache_index`; self-attention only) the new keys/values are written in at `cache_index` and the queries
        attend over the whole cache (causally: later positions are masked). Returns the output and the keys/values
        the caller keeps: the updated cache, else the new `[B, S, H, D]` keys/values (what a prefill collects).
        """
        if cache is not None and (self.is_cross or kv is not None or not self.causal):
            # Causal masking is what hides the cache positions not written yet.
            raise ValueError("a KV cache is for causal self-attention keys computed from the input")
        heads_major = cache is not None or kv is not None
        q, kv, k_positions = _project_qkv(self, x, q_positions, kv_input, kv, cache, cache_index)
        # Valid key positions of a heads-major layout (what the native kernels read).
        filled = cache_index + q.shape[1] if cache is not None else kv.k.shape[2]
        kernel = attention_kernel(self.spec.decode_kernels, heads_major=heads_major, q=q, filled=filled)
        out = _attend(self, kernel, q, kv, q_positions, k_positions, key_mask, is_training)
        return _project_out(self, out), kv


# The steps of `Attention.__call__` are functions, not methods: Haiku would put modules and parameters created in
# a method under an extra `~method` scope and change the parameter names.
def _dense(attn: Attention, name: str, inputs: jax.Array, stddev: float) -> jax.Array:
    spec = attn.spec
    return Dense(spec.d_model, attn.policy, spec.use_bias, stddev, name=name,
                 decode_kernels=spec.decode_kernels)(inputs)


def _project_qkv(attn: Attention, x: jax.Array, q_positions: jax.Array, kv_input: jax.Array | None,
                 kv: KV | None, cache: KV | None, cache_index: jax.Array | int
                 ) -> tuple[jax.Array, KV, jax.Array]:
    """-> (queries `[B, S, H, D]`, the keys/values to attend over, their absolute positions). Keys/values are
    projected from `kv_input` (default `x`) unless given; with a cache they are written into it and the keys
    returned are the whole updated cache."""
    spec = attn.spec
    gain = spec.cross_init_gain if attn.is_cross else spec.init_gain
    std = spec.init_std

    def split(a: jax.Array) -> jax.Array:
        return a.reshape(a.shape[:-1] + (spec.num_heads, spec.head_dim))

    q = split(_dense(attn, "q_proj", x, std))
    if spec.use_cosine_attention:
        q = _l2_normalize(q)
    heads_major = cache is not None or kv is not None
    if kv is None:
        # Cosine attention normalises keys here, once, before they are cached.
        source = x if kv_input is None else kv_input
        k = split(_dense(attn, "k_proj", source, std))
        if spec.use_cosine_attention:
            k = _l2_normalize(k)
        axes = ("batch", "length", "heads", "kv")
        v = split(_dense(attn, "v_proj", source, std * gain))
        kv = KV(sharding.constrain(k, axes), sharding.constrain(v, axes))
    k_positions = q_positions if not attn.is_cross else jnp.arange(kv.k.shape[2 if heads_major else 1])
    if cache is not None:
        # Write the new keys in first, then read the whole cache: the write is in place and nothing copies it.
        def write(c: jax.Array, a: jax.Array) -> jax.Array:
            a = jnp.swapaxes(a, 1, 2).astype(c.dtype)
            return jax.lax.dynamic_update_slice(c, a, (0, 0, cache_index, 0))

        kv = KV(write(cache.k, kv.k), write(cache.v, kv.v))
        k_positions = jnp.arange(cache.k.shape[2])
    return q, kv, k_positions


def _attend(attn: Attention, kernel: AttentionKernel, q: jax.Array, kv: KV, q_positions: jax.Array,
            k_positions: jax.Array, key_mask: jax.Array | None, is_training: bool) -> jax.Array:
    """Scaled, masked (and position-biased) scores -> softmax (or Sinkhorn) -> weighted values `[B, S, H, D]`."""
    spec = attn.spec
    k, v = kv.k.astype(q.dtype), kv.v.astype(q.dtype)
    logits = kernel.scores(q, k)
    if spec.use_cosine_attention:
        logits = logits / spec.tau_init
    else:
        logits = logits / math.sqrt(spec.head_dim)
    bias = jnp.zeros((), jnp.float32)
    if key_mask is not None:
        bias = bias + key_mask_bias(key_mask)
    if attn.causal:
        allowed = k_positions[None, :] <= q_positions[:, None]
        bias = bias + jnp.where(allowed, 0.0, MASK_VALUE).astype(jnp.float32)[None, None]
    logits = logits + bias
    if spec.use_swin_position_embeddings:
        q_len = spec.self_length
        kk = spec.cross_length if attn.is_cross else spec.self_length
        table = hk.get_parameter("rel_bias", [q_len, kk * spec.num_heads], jnp.float32,
                                 init=hk.initializers.RandomNormal(spec.init_std))
        rows = jnp.take(table, q_positions, axis=0).reshape(q_positions.shape[0], kk, spec.num_heads)
        rows = jnp.take(rows, jnp.minimum(k_positions, kk - 1), axis=1)  # [S, K, H]
        logits = logits + jnp.transpose(rows, (2, 0, 1))[None]

    if spec.sinkhorn_iters > 1 and spec.is_encoder and not attn.is_cross:
        allowed = jnp.broadcast_to(bias > MASK_VALUE / 2, logits.shape)
        for i in range(spec.sinkhorn_iters):
            axis = -1 if i % 2 == 0 else -2
            logits = logits - jax.nn.logsumexp(logits, axis=axis, keepdims=True)
            logits = jnp.where(allowed, logits, MASK_VALUE)
        weights = jnp.exp(logits)
    else:
        weights = jax.nn.softmax(logits, axis=-1)
    if is_training and spec.attention_dropout > 0.0:
        # Broadcast over batch and heads, as dalle-mini (flax's broadcast_dropout).
        keep = jax.random.bernoulli(hk.next_rng_key(), 1.0 - spec.attention_dropout, weights.shape[-2:])
        weights = weights * keep / (1.0 - spec.attention_dropout)
    return kernel.mix(weights.astype(v.dtype), v)


def _project_out(attn: Attention, out: jax.Array) -> jax.Array:
    """Per-head scale, merged heads, the sub-LN mid-norm, `out_proj`: `[B, S, H, D]` -> `[B, S, d]`."""
    spec = attn.spec
    if spec.use_head_scale:
        scale = hk.get_parameter("head_scale", [spec.num_heads], jnp.float32, init=jnp.ones)
        out = out * attn.policy.cast_to_compute(scale)[None, None, :, None]
    out = out.reshape(out.shape[:2] + (spec.d_model,))
    if spec.placement.attn_mid and not attn.is_cross:
        out = spec.norm("attn_mid", "mid_norm")(out)
    gain = spec.cross_init_gain if attn.is_cross else spec.init_gain
    return _dense(attn, "out_proj", out, spec.init_std * gain)


def _l2_normalize(x: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(x.astype(jnp.float32), axis=-1, keepdims=True)
    return (x / (norm + 1e-8)).astype(x.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Feed-forward
# ------------------------------------------------------------------------------------------------------------------
class FeedForward(hk.Module):
    """MLP (`use_glu=False`) or GLU (Shazeer 2020: act(x W0) * (x W1), then W2), with the norms its placement
    asks for (`norm_placement`): a pre-norm, a mid-norm on the hidden units and a post-norm on the output."""

    def __init__(self, spec: TransformerSpec, policy: jmp.Policy, name: str | None = None):
        super().__init__(name=name)
        self.spec = spec
        self.policy = policy

    def __call__(self, x: jax.Array, is_training: bool = False) -> jax.Array:
        spec, place = self.spec, self.spec.placement
        std = spec.init_std * spec.init_gain
        act = activation(spec.activation_function)

        def dense(features: int, name: str) -> Dense:
            return Dense(features, self.policy, spec.use_bias, std, name=name, decode_kernels=spec.decode_kernels)

        if place.ffn_pre:
            x = spec.norm("ffn_pre", "pre_norm")(x)
        if spec.use_glu:
            h = act(dense(spec.ffn_dim, "wi_0")(x))
            h = h * dense(spec.ffn_dim, "wi_1")(x)
        else:
            h = act(dense(spec.ffn_dim, "wi_0")(x))
        h = sharding.constrain(h, ("batch", "length", "mlp"))
        if place.ffn_mid:
            h = spec.norm("ffn_mid", "mid_norm")(h)
        h = dropout(h, spec.activation_dropout, is_training)
        y = dense(spec.d_model, "wo")(h)
        if place.ffn_post:
            y = spec.norm("ffn_post", "post_norm")(y)
        return dropout(y, spec.dropout, is_training)


# ------------------------------------------------------------------------------------------------------------------
# Block
# ------------------------------------------------------------------------------------------------------------------
def _sublayer(spec: TransformerSpec, x: jax.Array, prefix: str, fn: Callable[[jax.Array], Any],
              is_training: bool) -> tuple[jax.Array, Any]:
    """Norms, dropout and residual around one attention sub-layer (a function, not a method: Haiku would put
    modules created in a method under an extra `~method` scope)."""
    residual, place = x, spec.placement
    if place.has_attn_pre(spec.side):
        x = spec.norm("attn_pre", f"{prefix}_pre_norm")(x)
    x, extra = fn(x)
    if place.attn_post:
        x = spec.norm("attn_post", f"{prefix}_post_norm")(x)
    x = dropout(x, spec.dropout, is_training)
    x = residual * spec.residual_gain + x
    if place.attn_residual:
        x = spec.norm("attn_residual", f"{prefix}_residual_norm")(x)
    return x, extra


class BlockOutput(NamedTuple):
    x: jax.Array
    self_kv: KV  # the updated self-attention cache, or without one the new keys/values (what a prefill collects)
    cross_kv: KV | None  # cross-attention keys/values (computed once per prompt)


class Block(hk.Module):
    """One transformer layer: self-attention, optional cross-attention, feed-forward; the norms are where the
    spec's `ln_positions` row of `norm_placement.PLACEMENTS` puts them."""

    def __init__(self, spec: TransformerSpec, policy: jmp.Policy, name: str | None = None):
        super().__init__(name=name)
        self.spec = spec
        self.policy = policy

    def __call__(
        self,
        x: jax.Array,
        *,
        q_positions: jax.Array,
        self_key_mask: jax.Array | None = None,
        self_cache: KV | None = None,
        cache_index: jax.Array | int = 0,
        encoder_hidden: jax.Array | None = None,
        cross_kv: KV | None = None,
        cross_key_mask: jax.Array | None = None,
        output_norm: jax.Array | None = None,
        is_training: bool = False,
    ) -> BlockOutput:
        """`output_norm` (a per-layer bool scalar) switches on the layer-output norm (post-LN / Swin v2)."""
        spec = self.spec
        x = sharding.constrain(x, ("batch", "length", "embed"))
        attn = Attention(spec, self.policy, is_cross=False, causal=not spec.is_encoder, name="self_attn")
        x, self_kv = _sublayer(
            spec, x, "self_attn",
            lambda h: attn(h, q_positions=q_positions, key_mask=self_key_mask, cache=self_cache,
                           cache_index=cache_index, is_training=is_training),
            is_training)
        new_cross = None
        if spec.has_cross_attention:
            cross = Attention(spec, self.policy, is_cross=True, causal=False, name="cross_attn")
            x, new_cross = _sublayer(
                spec, x, "cross_attn",
                lambda h: cross(h, q_positions=q_positions, key_mask=cross_key_mask, kv_input=encoder_hidden,
                                kv=cross_kv, is_training=is_training),
                is_training)
        residual = x
        x = FeedForward(spec, self.policy, name="ffn")(x, is_training)
        x = residual * spec.residual_gain + x
        if spec.placement.output_every:
            normed = spec.norm("output", "output_norm")(x)
            x = normed if output_norm is None else jnp.where(output_norm, normed, x)
        x = sharding.constrain(x, ("batch", "length", "embed"))
        return BlockOutput(x, self_kv, new_cross)


def output_norm_flags(spec: TransformerSpec, num_layers: int) -> jax.Array:
    """Which layers apply the layer-output norm (`NormPlacement.output_norm_layers`), as a `[num_layers]` bool."""
    return jnp.asarray(spec.placement.output_norm_layers(num_layers), bool)


# ------------------------------------------------------------------------------------------------------------------
# Layer stacks
# ------------------------------------------------------------------------------------------------------------------
def stack_layers(
    layer_fn: Callable[..., tuple[jax.Array, Any]],
    num_layers: int,
    x: jax.Array,
    per_layer: Sequence[Any],
    *,
    scan: bool,
    remat: bool,
    per_layer_outputs: bool = False,
    name: str = "layers",
) -> tuple[jax.Array, Any]:
    """Runs `layer_fn(x, *per_layer[i]) -> (x, ys_i)` for each layer and returns `(x, stacked ys)`.

    `scan=True` uses `hk.layer_stack`: parameters get a leading `layers` axis and the layer is traced and compiled
    once, whatever the depth. `scan=False` unrolls a Python loop (parameters `layer_0`, `layer_1`, ...), which is
    what unscanned dalle-mini checkpoints look like. `remat` recomputes each layer's activations in the backward
    pass (`hk.remat`), trading compute for memory. The layer function must build its modules with the name
    "layer" (it is called inside a scope that gives each layer its own parameters). Unrolled, a `PerLayer`
    input gives layer i its i-th element, and `per_layer_outputs` returns the outputs as `PerLayer` instead of
    stacking them (decode caches: see `PerLayer`).
    """
    fn = hk.remat(layer_fn) if remat else layer_fn
    if scan:
        return hk.layer_stack(num_layers, with_per_layer_inputs=True, name=name)(fn)(x, *per_layer)
    ys = []
    with hk.name_scope(name):
        for i in range(num_layers):
            with hk.name_scope(f"layer_{i}"):
                inputs = jax.tree_util.tree_map(lambda a: a[i], tuple(per_layer),
                                                is_leaf=lambda a: isinstance(a, PerLayer))
                x, y = fn(x, *inputs)
            ys.append(y)
    if not ys or ys[0] is None:
        return x, None
    if per_layer_outputs:
        return x, PerLayer(ys)
    return x, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ys)


def block_param_rules() -> tuple[tuple[str, tuple], ...]:
    """Partition rules shared by both model kinds: positions, attention, feed-forward and norms (regex over Haiku
    paths -> logical axes; the models add their embeddings and heads)."""
    return (
        (r"embed_positions/embedding$", (None, "embed")),
        (r"(q_proj|k_proj|v_proj)/kernel$", ("embed", "heads")),
        (r"(q_proj|k_proj|v_proj)/bias$", ("heads",)),
        (r"out_proj/kernel$", ("heads", "embed")),
        (r"out_proj/bias$", ("embed",)),
        (r"head_scale$", ("heads",)),
        (r"rel_bias$", (None, None)),
        (r"attn/mid_norm/(scale|bias)$", ("norm",)),
        (r"ffn/wi_\d/kernel$", ("embed", "mlp")),
        (r"ffn/wi_\d/bias$", ("mlp",)),
        (r"ffn/mid_norm/(scale|bias)$", ("mlp",)),
        (r"ffn/wo/kernel$", ("mlp", "embed")),
        (r"ffn/wo/bias$", ("embed",)),
        (r"(norm|layernorm_embedding|final_ln)/(scale|bias)$", ("norm",)),
    )
