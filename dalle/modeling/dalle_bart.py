"""DalleBart: dalle-mini's BART-style encoder-decoder (text encoder, causal image decoder with cross-attention).

Structure (dalle-mini `modeling.py`, re-expressed in Haiku):
  encoder: token embed (* sqrt(d) if scale_embedding) + learned positions -> layernorm_embedding -> dropout
           -> N encoder blocks -> final_ln (bias only unless force_ln_scale; absent for post-LN)
  decoder: image token embed (codes, the dalle-mini extra tokens, then BOS) + learned positions
           -> layernorm_embedding -> dropout -> N decoder blocks (self + cross + FFN) -> final_ln -> lm_head
The lm_head (no bias) covers `image_vocab_size + image_extra_tokens + 1` outputs like dalle-mini's
`config.image_vocab_size + 1`; the model's distribution (loss, sampling) is over the first `image_vocab_size`
outputs, the VQGAN codes. BOS = `image_vocab_size` (dalle-mini's decoder_start_token_id 16384).

Three ways to run the decoder share one set of parameters (one `stack_layers` call each):
  * `decode`: teacher forcing over a whole sequence (training, `logits`);
  * `prefill`: the prompt's image prefix (BOS + given codes) with the encoder output; returns self K/V to fill
    the cache and the cross-attention K/V of every layer, computed once per prompt;
  * `decode_step`: S new tokens at a traced position against the cache.
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

PAD_ID = 0  # text padding id everywhere in dalle (converted BART vocabularies are remapped to it)


def deepnet_gains(cfg: ConfigDict, part: str) -> tuple[float, float]:
    """(alpha, beta) of DeepNet (arXiv:2203.00555) for an encoder-decoder, as dalle-mini computes them."""
    n, m = cfg.encoder_layers, cfg.decoder_layers
    if part == "encoder":
        return 0.81 * (n**4 * m) ** 0.0625, 0.87 * (n**4 * m) ** -0.0625
    return (3 * m) ** 0.25, (12 * m) ** -0.25


def subln_gain(cfg: ConfigDict, part: str) -> float:
    """Init gain of Magneto's sub-LN (arXiv:2210.06423) for an encoder-decoder, as dalle-mini computes it."""
    n, m = cfg.encoder_layers, cfg.decoder_layers
    if part == "encoder":
        return math.sqrt(1.0 / 3.0 * math.log(3 * m) * math.log(2 * n))
    return math.sqrt(math.log(3 * m))


ENCODER_SWITCHES = ("ln_positions", "use_bias", "use_glu", "activation_function")


def encoder_overrides(cfg: ConfigDict) -> dict[str, Any]:
    """The spec fields the text encoder sets itself (`model.encoder_<key>` when not None; schema._text_encoder),
    so a pretrained BART / BERT encoder can sit under a decoder of another kind."""
    out = {k: cfg.get(f"encoder_{k}") for k in ENCODER_SWITCHES if cfg.get(f"encoder_{k}") is not None}
    return {**out, "norm_eps": cfg.get("encoder_layer_norm_eps", layers.NORM_EPS)}


def make_spec(cfg: ConfigDict, part: str) -> layers.TransformerSpec:
    enc = part == "encoder"
    alpha, gain, cross_gain = 1.0, 1.0, 1.0
    if cfg.use_deepnet_scaling:
        alpha, beta = deepnet_gains(cfg, part)
        gain = cross_gain = beta
    elif cfg.use_subln_init:
        gain = subln_gain(cfg, part)
    return layers.TransformerSpec.from_config(
        cfg,
        **(encoder_overrides(cfg) if enc else {}),
        num_heads=cfg.encoder_attention_heads if enc else cfg.decoder_attention_heads,
        ffn_dim=cfg.encoder_ffn_dim if enc else cfg.decoder_ffn_dim,
        sinkhorn_iters=cfg.sinkhorn_iters if enc else 1,
        residual_gain=alpha,
        init_gain=gain,
        cross_init_gain=cross_gain,
        is_encoder=enc,
        has_cross_attention=not enc,
        self_length=cfg.max_text_length if enc else cfg.image_length,
        cross_length=cfg.max_text_length,
    )


class DecoderCache(NamedTuple):
    """Everything the decode loop carries: heads-major self K/V (`[B, H, image_length, D]` per layer) and cross
    K/V (`[B, H, Lt, D]`), `layers.PerLayer` (or stacked `[L, ...]` for a scanned stack), and the text padding mask
    `[B, Lt]`."""

    self_kv: Any
    cross_kv: Any
    text_mask: jax.Array


class _Stack(hk.Module):
    """Embeddings + layer stack + final norm of one side (encoder or decoder); parameters under its name."""

    def __init__(self, cfg: ConfigDict, policy: jmp.Policy, spec: layers.TransformerSpec, part: str):
        super().__init__(name=part)
        self.cfg, self.policy, self.spec, self.part = cfg, policy, spec, part

    def __call__(self, ids: jax.Array, positions: jax.Array, *, self_key_mask=None, enc=None, enc_mask=None,
                 cache: "DecoderCache | None" = None, cache_index=0, collect_kv: bool = False,
                 is_training: bool = False) -> tuple[jax.Array, Any]:
        cfg, spec, policy = self.cfg, self.spec, self.policy
        # Embeddings (created in __call__ itself: Haiku scopes modules made in other methods under `~method`).
        enc_side = self.part == "encoder"
        vocab = cfg.encoder_vocab_size if enc_side else cfg.image_vocab_size + cfg.image_extra_tokens + 1
        length = cfg.max_text_length if enc_side else cfg.image_length
        x = layers.Embed(vocab, cfg.d_model, self.policy, cfg.init_std, name="embed_tokens")(ids)
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        if cfg.use_absolute_position_embeddings:
            x = x + layers.Embed(length, cfg.d_model, self.policy, cfg.init_std, name="embed_positions")(positions)[None]
        types = cfg.get("encoder_token_types", 0) if enc_side else 0
        if types:  # BERT's token types: every caption token is type 0
            x = x + layers.Embed(types, cfg.d_model, self.policy, cfg.init_std, name="embed_token_types")(
                jnp.zeros_like(ids))
        x = layers.Norm(cfg.ln_type, use_scale=True, name="layernorm_embedding", eps=spec.norm_eps)(x)
        x = layers.dropout(x, cfg.dropout, is_training)

        n = cfg.encoder_layers if self.part == "encoder" else cfg.decoder_layers
        flags = layers.output_norm_flags(spec, n)
        if cache is None:
            def layer(h, out_norm):
                out = layers.Block(spec, policy, name="layer")(
                    h, q_positions=positions, self_key_mask=self_key_mask, encoder_hidden=enc,
                    cross_key_mask=enc_mask, output_norm=out_norm, is_training=is_training)
                return out.x, ((out.self_kv, out.cross_kv) if collect_kv else None)
            per_layer = [flags]
        else:
            def layer(h, out_norm, self_kv, cross_kv):
                out = layers.Block(spec, policy, name="layer")(
                    h, q_positions=positions, self_cache=self_kv, cache_index=cache_index, cross_kv=cross_kv,
                    cross_key_mask=cache.text_mask, output_norm=out_norm, is_training=is_training)
                return out.x, out.self_kv
            per_layer = [flags, cache.self_kv, cache.cross_kv]
        x, ys = layers.stack_layers(layer, n, x, per_layer, scan=cfg.scan_layers, remat=cfg.remat and is_training,
                                    per_layer_outputs=cache is not None)
        use_final_ln = cfg.use_final_ln_encoder if enc_side else cfg.use_final_ln_decoder
        if use_final_ln and spec.placement.final_norm:  # e.g. post-LN already ends every layer with a norm
            x = spec.norm("final", "final_ln")(x)
        return x, ys


class DalleBart:
    """The model as methods to call inside `hk.transform` (`dalle.modeling.model.DalleBartModel` does that).

    A plain class, not an `hk.Module`, so parameter names do not depend on which method built them (Haiku scopes
    modules created in a module's non-`__call__` methods under `~method`). Each method builds the encoder and/or
    the decoder once, so every transformed call sees one layer stack per side.
    """

    def __init__(self, cfg: ConfigDict, policy: jmp.Policy):
        self.cfg = cfg
        self.policy = policy
        self.enc_spec = make_spec(cfg, "encoder")
        self.dec_spec = make_spec(cfg, "decoder")

    @property
    def decoder_vocab(self) -> int:
        return self.cfg.image_vocab_size + self.cfg.image_extra_tokens + 1

    def _lm_head(self, x: jax.Array, decode_kernels: str = "xla") -> jax.Array:
        logits = layers.Dense(self.decoder_vocab, self.policy, False, self.cfg.init_std, name="lm_head",
                              decode_kernels=decode_kernels)(x)
        return sharding.constrain(logits, ("batch", "length", "vocab"))

    def encode(self, text_tokens: jax.Array, is_training: bool = False) -> tuple[jax.Array, jax.Array]:
        """`[B, Lt]` token ids (pad 0) -> (hidden `[B, Lt, d]`, mask `[B, Lt]` bool)."""
        mask = text_tokens != PAD_ID
        positions = jnp.arange(text_tokens.shape[1])
        x, _ = _Stack(self.cfg, self.policy, self.enc_spec, "encoder")(
            text_tokens, positions, self_key_mask=mask, is_training=is_training)
        return x, mask

    def decode(self, image_inputs: jax.Array, enc: jax.Array, enc_mask: jax.Array,
               is_training: bool = False) -> jax.Array:
        """Teacher forcing: `[B, S]` decoder inputs (BOS then codes) -> logits `[B, S, decoder_vocab]`."""
        positions = jnp.arange(image_inputs.shape[1])
        x, _ = _Stack(self.cfg, self.policy, self.dec_spec, "decoder")(
            image_inputs, positions, enc=enc, enc_mask=enc_mask, is_training=is_training)
        return self._lm_head(x)

    def __call__(self, text_tokens: jax.Array, image_inputs: jax.Array, is_training: bool = False) -> jax.Array:
        enc, mask = self.encode(text_tokens, is_training)
        return self.decode(image_inputs, enc, mask, is_training)

    def prefill(self, text_tokens: jax.Array, image_inputs: jax.Array, cache_length: int,
                repeats: int = 1) -> tuple[jax.Array, "DecoderCache"]:
        """Encodes the `B` prompts once, runs the decoder prefix `image_inputs` `[B, S]` (BOS + prompt codes) and
        builds the cache for `cache_length` positions; then repeats every row `repeats` times (images per prompt).
        Returns last-position logits `[B * repeats, V]` and the cache."""
        enc, mask = self.encode(text_tokens)
        positions = jnp.arange(image_inputs.shape[1])
        x, (self_kv, cross_kv) = _Stack(self.cfg, self.policy, self.dec_spec, "decoder")(
            image_inputs, positions, enc=enc, enc_mask=mask, collect_kv=True)
        logits = self._lm_head(x[:, -1:])[:, 0]
        per_layer = not self.cfg.scan_layers
        cache = DecoderCache(layers.decode_cache(self_kv, cache_length, repeats, per_layer),
                             layers.decode_cache(cross_kv, cross_kv.k.shape[2], repeats, per_layer),
                             jnp.repeat(mask, repeats, axis=0))
        return jnp.repeat(logits, repeats, axis=0), cache

    def decode_step(self, tokens: jax.Array, index: jax.Array, cache: "DecoderCache",
                    decode_kernels: str = "xla") -> tuple[jax.Array, Any]:
        """`[B, S]` tokens at positions `index..index+S-1` -> (logits `[B, S, V]`, the updated self-attention
        cache). `decode_kernels`: see `layers.TransformerSpec.decode_kernels`."""
        positions = index + jnp.arange(tokens.shape[1])
        spec = dataclasses.replace(self.dec_spec, decode_kernels=decode_kernels)
        x, self_kv = _Stack(self.cfg, self.policy, spec, "decoder")(tokens, positions, cache=cache, cache_index=index)
        return self._lm_head(x, decode_kernels), self_kv


def param_rules(prefix: str = "dalle_bart") -> tuple[tuple[str, tuple], ...]:
    """Regex over Haiku paths -> logical axes (a leading `layers` axis is added for scanned params)."""
    return (
        (r"embed_tokens/embedding$", ("vocab", "embed")),
        (r"embed_token_types/embedding$", (None, "embed")),
        (r"lm_head/kernel$", ("embed", "vocab")),
    ) + layers.block_param_rules()
