"""Decoder-only single-stream model (DALL·E / CogView): `[text tokens] [BOS] [image codes]` in one causal sequence.

* Text tokens are right-padded with id 0; padding keys are masked out of attention, so a prompt's image never
  sees its padding and the all-padding caption is a well-defined unconditional prompt.
* Separate token tables for text (`text_vocab_size`) and image (`image_vocab_size` codes + BOS), one learned
  absolute position table over `max_text_length + image_length` positions.
* The same block as DalleBart (every ln_positions variant; `cogview`/`sandwich` is CogView's sandwich-LN),
  self-attention only.
* Loss = `text_loss_weight * CE(text) + image_loss_weight * CE(image)` (DALL·E weighs 1/8 and 7/8): the text
  head predicts the next text token at non-padding targets, the image head the next image code. With
  `text_loss_weight = 0` there is no text head.
* `image_code_features = F > 0`: a frozen table `image_code_features` [codes, F] (the VQGAN's codebook vectors,
  with `image_code_feature_source = "codebook_pixels"` also the pixels its decoder draws for each code,
  standardised; the trainer fills it) adds `features[code] @ W_in` to every code's embedding and
  `(h @ W_out) @ features.T` to every code's logit. Codes then share what the model learns about their look: a
  code that is never a training target still gets a logit from its features (EVAL.md, composition section).
  `image_code_weights = "from_features"` goes further: no per-code embedding row or head column at all; both
  tables are small MLPs of the features, so codes that look alike share every weight.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
from ml_collections import ConfigDict

from dalle import sharding
from dalle.modeling import layers

PAD_ID = 0


def make_spec(cfg: ConfigDict) -> layers.TransformerSpec:
    alpha, gain = 1.0, 1.0
    n = cfg.num_layers
    if cfg.use_deepnet_scaling:  # DeepNet's decoder-only gains
        alpha, gain = (2 * n) ** 0.25, (8 * n) ** -0.25
    elif cfg.use_subln_init:  # Magneto's decoder-only gain
        gain = math.sqrt(math.log(2 * n))
    # num_heads, ffn_dim and every shared option are `model` keys of their own.
    return layers.TransformerSpec.from_config(cfg, residual_gain=alpha, init_gain=gain,
                                              self_length=cfg.max_text_length + cfg.image_length)


class Cache(NamedTuple):
    self_kv: Any  # heads-major `[B, H, Lt + Li, D]` per layer (layers.PerLayer), or stacked `[L, ...]` if scanned
    key_mask: jax.Array  # [B, Lt + Li] bool (text padding is False)


class DecoderOnly:
    """Methods to call inside `hk.transform` (a plain class: see dalle_bart.DalleBart for why)."""

    def __init__(self, cfg: ConfigDict, policy: jmp.Policy):
        self.cfg = cfg
        self.policy = policy
        self.spec = make_spec(cfg)

    def _trunk(self, x: jax.Array, positions: jax.Array, key_mask: jax.Array, *, cache: Cache | None = None,
               cache_index=0, collect_kv: bool = False, is_training: bool = False, decode_kernels: str = "xla"):
        cfg, policy = self.cfg, self.policy
        spec = dataclasses.replace(self.spec, decode_kernels=decode_kernels)
        flags = layers.output_norm_flags(spec, cfg.num_layers)
        if cache is None:
            def layer(h, out_norm):
                out = layers.Block(spec, policy, name="layer")(
                    h, q_positions=positions, self_key_mask=key_mask, output_norm=out_norm, is_training=is_training)
                return out.x, (out.self_kv if collect_kv else None)
            per_layer = [flags]
        else:
            def layer(h, out_norm, self_kv):
                out = layers.Block(spec, policy, name="layer")(
                    h, q_positions=positions, self_key_mask=key_mask, self_cache=self_kv, cache_index=cache_index,
                    output_norm=out_norm, is_training=is_training)
                return out.x, out.self_kv
            per_layer = [flags, cache.self_kv]
        x, ys = layers.stack_layers(layer, cfg.num_layers, x, per_layer, scan=cfg.scan_layers,
                                    remat=cfg.remat and is_training, per_layer_outputs=cache is not None)
        if cfg.use_final_ln and spec.placement.final_norm:
            x = spec.norm("final", "final_ln")(x)
        return x, ys

    def _embed(self, text_tokens: jax.Array | None, image_inputs: jax.Array | None, offset,
               is_training: bool) -> jax.Array:
        """Token + position embeddings of `[text] [image]` starting at absolute position `offset`."""
        cfg = self.cfg
        parts = []
        if text_tokens is not None:
            parts.append(layers.Embed(cfg.text_vocab_size, cfg.d_model, self.policy, cfg.init_std,
                                      name="text_embed")(text_tokens))
        if image_inputs is not None:
            parts.append(self._image_embed(image_inputs))
        x = jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        positions = offset + jnp.arange(x.shape[1])
        pos = layers.Embed(cfg.max_text_length + cfg.image_length, cfg.d_model, self.policy, cfg.init_std,
                           name="embed_positions")(positions)
        x = x + pos[None]
        if cfg.embedding_ln:
            x = layers.Norm(cfg.ln_type, use_scale=True, name="layernorm_embedding")(x)
        return layers.dropout(x, cfg.dropout, is_training), positions

    @property
    def code_dims(self) -> int:
        """`model.image_code_features` (absent from models saved before the option: 0)."""
        return int(self.cfg.get("image_code_features", 0))

    def _code_features(self) -> jax.Array:
        """The frozen [codes, F] feature table (zeros until the trainer puts the VQGAN codebook in)."""
        cfg = self.cfg
        # One name in the module's own scope (hk.name_scope would open image_codes_1 on the second call).
        table = hk.get_parameter("image_code_features", [cfg.image_vocab_size, self.code_dims], jnp.float32,
                                 init=jnp.zeros)
        return self.policy.cast_to_compute(jax.lax.stop_gradient(table))

    @property
    def per_code_weights(self) -> bool:
        """Whether every code has its own embedding row and head column (`model.image_code_weights`)."""
        return self.cfg.get("image_code_weights", "per_code") == "per_code"

    def _feature_table(self, name: str) -> jax.Array:
        """`from_features`: a [codes, d_model] table computed from the feature table by a small MLP, so a code's
        weights are a function of its look, shared with every code that looks alike."""
        cfg = self.cfg
        h = layers.Dense(cfg.d_model, self.policy, False, cfg.init_std, name=f"{name}_1")(self._code_features())
        return layers.Dense(cfg.d_model, self.policy, False, cfg.init_std, name=f"{name}_2")(jax.nn.gelu(h))

    def _image_embed(self, ids: jax.Array) -> jax.Array:
        """Embeddings of image-side inputs (codes, and BOS = image_vocab_size)."""
        cfg = self.cfg
        if not self.per_code_weights:
            bos = hk.get_parameter("image_bos", [cfg.d_model], jnp.float32,
                                   init=hk.initializers.TruncatedNormal(cfg.init_std))
            codes = jnp.take(self._feature_table("image_code_in"), ids, axis=0, mode="fill", fill_value=0)
            return jnp.where((ids == cfg.image_vocab_size)[..., None], self.policy.cast_to_compute(bos), codes)
        image = layers.Embed(cfg.image_vocab_size + 1, cfg.d_model, self.policy, cfg.init_std,
                             name="image_embed")(ids)
        if self.code_dims:
            feats = jnp.take(self._code_features(), ids, axis=0, mode="fill", fill_value=0)  # BOS: 0
            image = image + layers.Dense(cfg.d_model, self.policy, False, cfg.init_std, name="image_code_in")(feats)
        return image

    def _image_head(self, x: jax.Array, decode_kernels: str = "xla") -> jax.Array:
        cfg = self.cfg
        if not self.per_code_weights:
            query = layers.Dense(cfg.d_model, self.policy, False, cfg.init_std, name="image_code_out")(x)
            out = jnp.einsum("...d,vd->...v", query, self._feature_table("image_code_table_out"))
            return sharding.constrain(out, ("batch", "length", "vocab"))
        out = layers.Dense(cfg.image_vocab_size, self.policy, False, cfg.init_std, name="image_head",
                           decode_kernels=decode_kernels)(x)
        if self.code_dims:
            query = layers.Dense(self.code_dims, self.policy, False, cfg.init_std, name="image_code_out")(x)
            out = out + jnp.einsum("...f,vf->...v", query, self._code_features())
        return sharding.constrain(out, ("batch", "length", "vocab"))

    def __call__(self, text_tokens: jax.Array, image_inputs: jax.Array, is_training: bool = False):
        """Teacher forcing over `[text (Lt)] [BOS + codes[:-1] (Li)]` -> (text logits `[B, Lt-1, Vt]` predicting
        text[1:] or None, image logits `[B, Li, Vi]` predicting the codes)."""
        cfg = self.cfg
        lt = text_tokens.shape[1]
        x, positions = self._embed(text_tokens, image_inputs, 0, is_training)
        key_mask = jnp.concatenate([text_tokens != PAD_ID, jnp.ones(image_inputs.shape, bool)], axis=1)
        x, _ = self._trunk(x, positions, key_mask, is_training=is_training)
        image_logits = self._image_head(x[:, lt:])
        text_logits = None
        if cfg.text_loss_weight > 0:
            text_logits = layers.Dense(cfg.text_vocab_size, self.policy, False, cfg.init_std, name="text_head")(
                x[:, : lt - 1])
            text_logits = sharding.constrain(text_logits, ("batch", "length", "vocab"))
        return text_logits, image_logits

    def prefill(self, text_tokens: jax.Array, image_inputs: jax.Array, cache_length: int,
                repeats: int = 1) -> tuple[jax.Array, Cache]:
        """Runs `[text] [BOS + prompt codes]` for the `B` prompts, builds a cache of `Lt + cache_length` positions
        and repeats every row `repeats` times. Returns last-position image logits `[B * repeats, Vi]`."""
        lt = text_tokens.shape[1]
        x, positions = self._embed(text_tokens, image_inputs, 0, False)
        key_mask = jnp.concatenate([text_tokens != PAD_ID, jnp.ones(image_inputs.shape, bool)], axis=1)
        x, kv = self._trunk(x, positions, key_mask, collect_kv=True)
        logits = self._image_head(x[:, -1:])[:, 0]
        pad = lt + cache_length - x.shape[1]
        full_mask = jnp.pad(key_mask, ((0, 0), (0, pad)), constant_values=True)
        self_kv = layers.decode_cache(kv, lt + cache_length, repeats, per_layer=not self.cfg.scan_layers)
        cache = Cache(self_kv, jnp.repeat(full_mask, repeats, axis=0))
        return jnp.repeat(logits, repeats, axis=0), cache

    def decode_step(self, tokens: jax.Array, index: jax.Array, cache: Cache,
                    decode_kernels: str = "xla") -> tuple[jax.Array, Any]:
        """`[B, S]` image-side tokens at image positions `index..` -> (image logits `[B, S, Vi]`, the updated
        self-attention cache). `decode_kernels`: see `layers.TransformerSpec.decode_kernels`."""
        lt = self.cfg.max_text_length
        x, positions = self._embed(None, tokens, lt + index, False)
        x, self_kv = self._trunk(x, positions, cache.key_mask, cache=cache, cache_index=lt + index,
                                 decode_kernels=decode_kernels)
        return self._image_head(x, decode_kernels), self_kv


def param_rules() -> tuple[tuple[str, tuple], ...]:
    return (
        (r"(text_embed|image_embed)/embedding$", ("vocab", "embed")),
        (r"image_code_features$", ("vocab", None)),
        (r"image_code_in/kernel$", (None, "embed")),
        (r"image_code_out/kernel$", ("embed", None)),
        (r"image_code_(in|table_out)_[12]/kernel$", (None, None)),  # [F, d] and [d, d]: small
        (r"image_bos$", (None,)),
        (r"(image_head|text_head)/kernel$", ("embed", "vocab")),
    ) + layers.block_param_rules()
