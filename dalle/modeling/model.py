"""`build_model(model_config)`: the pure-function face of the text-to-image models, used by the trainer, the
sampler, the converter and the demo.

Batches (both kinds): `{"text_tokens": int32 [B, max_text_length] (pad 0), "image_tokens": int32 [B, image_length]}`.
The decoder input is `[BOS] + image_tokens[:, :-1]` with BOS = `image_vocab_size`; every position predicts the
next code. Losses and accuracies are over the `image_vocab_size` VQGAN codes only (dalle-mini's extra rows and
BOS can never be targets, and the sampler never emits them).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import numpy as np
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import kinds, precision, registry, sharding
from dalle.modeling import dalle_bart, decoder_only, layers

Params = Any
Batch = Mapping[str, jax.Array]

sharding.register_partition_rules("dalle_bart", dalle_bart.param_rules())
sharding.register_partition_rules("decoder_only", decoder_only.param_rules())


def complete_config(model_config: ConfigDict) -> ConfigDict:
    """Fills schema defaults into a `model` section and runs its checks (raises ConfigError naming keys)."""
    kind = _text_to_image_kind(model_config)
    defaults, check = kind.defaults, kind.check
    out = defaults()
    errors = []
    for key in model_config.keys():
        if key not in out:
            errors.append(f"unknown key 'model.{key}'")
            continue
        value = model_config[key]
        if isinstance(out[key], float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        with out.ignore_type():
            out[key] = tuple(value) if isinstance(value, list) else value
    if not errors and check is not None:
        errors.extend(check(out, ConfigDict({"model": out})))
    if errors:
        raise config_lib.ConfigError("invalid model config:\n  " + "\n  ".join(errors))
    out.lock()
    return out


def _path(path: Any) -> str:
    if isinstance(path, str):
        return path
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None):
    """Mean CE and accuracy in float32 (weights: 1 where the target counts)."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    nll = lse - target
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    if weights is None:
        return jnp.mean(nll), jnp.mean(correct)
    weights = weights.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(nll * weights) / denom, jnp.sum(correct * weights) / denom


class _Model:
    """Shared plumbing: one `hk.transform` per compute dtype whose first argument names the module method."""

    kind: str = ""

    def __init__(self, model_config: ConfigDict):
        self.config = complete_config(model_config)
        self._transforms: dict[str, hk.Transformed] = {}
        self._generate_cache: dict = {}  # compiled decode loops (dalle.modeling.sampling)

    # --- to be provided by subclasses ----------------------------------------------------------------------------
    def _module(self, policy: jmp.Policy) -> hk.Module:
        raise NotImplementedError

    @property
    def text_vocab_size(self) -> int:
        raise NotImplementedError

    # --- common ------------------------------------------------------------------------------------------------
    @property
    def image_vocab_size(self) -> int:
        return self.config.image_vocab_size

    @property
    def image_length(self) -> int:
        return self.config.image_length

    @property
    def max_text_length(self) -> int:
        return self.config.max_text_length

    def check_tokens(self, text_tokens: jax.Array | None, image_tokens: jax.Array | None = None,
                     image_length: int | None = None) -> None:
        """Shape/dtype contract at the model boundary (static under jit, so free): integer ids, text
        `[B, max_text_length]`, image `[B, image_length]` with the same B. chex names the offending argument."""
        if text_tokens is not None:
            chex.assert_type(text_tokens, int)
            chex.assert_shape(text_tokens, (None, self.max_text_length))
        if image_tokens is not None:
            chex.assert_type(image_tokens, int)
            chex.assert_shape(image_tokens, (None, self.image_length if image_length is None else image_length))
        if text_tokens is not None and image_tokens is not None:
            chex.assert_equal_shape_prefix([text_tokens, image_tokens], 1)

    @property
    def bos_id(self) -> int:
        return self.config.image_vocab_size

    @property
    def partition_rules(self) -> tuple:
        return sharding.get_partition_rules(self.kind)

    def transformed(self, compute_dtype: str = "float32") -> hk.Transformed:
        if compute_dtype not in self._transforms:
            dtype = precision.jnp_dtype(compute_dtype)
            policy = jmp.Policy(param_dtype=jnp.float32, compute_dtype=dtype, output_dtype=dtype)

            def fn(method: str, *args, **kwargs):
                with hk.name_scope(self.kind):
                    module = self._module(policy)
                    return getattr(module, method)(*args, **kwargs)

            self._transforms[compute_dtype] = hk.transform(fn)
        return self._transforms[compute_dtype]

    def apply(self, params: Params, method: str, *args, rng: jax.Array | None = None,
              compute_dtype: str = "float32", **kwargs):
        return self.transformed(compute_dtype).apply(params, rng, method, *args, **kwargs)

    def init(self, rng: jax.Array) -> Params:
        """Fresh float32 parameters (pure; jit it with out_shardings to create them sharded)."""
        text = jnp.zeros((1, self.max_text_length), jnp.int32)
        image = jnp.zeros((1, self.image_length), jnp.int32)
        return self.transformed().init(rng, "__call__", text, image)

    def decoder_inputs(self, image_tokens: jax.Array) -> jax.Array:
        bos = jnp.full(image_tokens.shape[:1] + (1,), self.bos_id, image_tokens.dtype)
        return jnp.concatenate([bos, image_tokens[:, :-1]], axis=1)

    def param_count(self, params: Params) -> int:
        return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))

    # --- sampling hooks (dalle.modeling.sampling) ------------------------------------------------------------
    def unrolled(self) -> "_Model":
        """The same model with one module per layer (`scan_layers=False`), for token-by-token decoding.

        Inside a scan over stacked weights, XLA copies each layer's weights out of the stack on every step before
        the matmuls read them; at batch 1 decoding is bound by weight reads, so that copy doubles the time per
        token (measured 2x on CPU with mini-sized layers). Decoding therefore runs the layers unrolled on
        per-layer arrays, sliced from the stack once per `generate` call (`unstack_params`).
        """
        if not self.config.scan_layers:
            return self
        if "_unrolled" not in self.__dict__:
            cfg = ConfigDict(self.config.to_dict())
            cfg.scan_layers = False
            self.__dict__["_unrolled"] = type(self)(cfg)
        return self.__dict__["_unrolled"]

    def unstack_params(self, params: Params) -> Params:
        """Stacked (`layers/layer/...`, leading layer axis) -> per-layer (`layers/layer_i/layer/...`) params."""
        if not self.config.scan_layers:
            return params
        out = {}
        for name, leaves in params.items():
            if "/layers/layer/" not in name:
                out[name] = leaves
                continue
            n = next(iter(leaves.values())).shape[0]
            for i in range(n):
                out[name.replace("/layers/layer/", f"/layers/layer_{i}/layer/")] = {k: v[i] for k, v in leaves.items()}
        return out

    def prefill(self, params: Params, text_tokens: jax.Array, image_inputs: jax.Array, repeats: int = 1,
                compute_dtype: str = "float32"):
        """-> (code logits `[B * repeats, image_vocab_size]` for the next position, cache)."""
        self.check_tokens(text_tokens, image_inputs, image_inputs.shape[1])
        logits, cache = self.apply(params, "prefill", text_tokens, image_inputs, self.image_length, repeats,
                                   compute_dtype=compute_dtype)
        return logits[..., : self.image_vocab_size].astype(jnp.float32), cache

    def take_cache_rows(self, cache, rows: jax.Array):
        """The cache of batch rows `rows` (e.g. one encoded unconditional prompt repeated for every image)."""
        return type(cache)(*(layers.take_rows(part, rows) for part in cache))

    def decode_step(self, params: Params, tokens: jax.Array, index: jax.Array, cache,
                    compute_dtype: str = "float32", decode_kernels: str = "xla"):
        """`tokens` `[B, S]` at image positions `index..index+S-1` -> (code logits `[B, S, V]`, updated cache).

        `decode_kernels="native"` runs the step on `dalle.kernels`' CPU kernels (`layers.TransformerSpec.
        decode_kernels`); `params` must then carry the packed weights of `layers.with_panel_kernels`."""
        chex.assert_type(tokens, int)
        chex.assert_rank(tokens, 2)
        logits, self_kv = self.apply(params, "decode_step", tokens, index, cache, decode_kernels,
                                     compute_dtype=compute_dtype)
        return logits[..., : self.image_vocab_size].astype(jnp.float32), cache._replace(self_kv=self_kv)


class DalleBartModel(_Model):
    kind = "dalle_bart"

    def _module(self, policy):
        return dalle_bart.DalleBart(self.config, policy)

    @property
    def text_vocab_size(self) -> int:
        return self.config.encoder_vocab_size

    def logits(self, params: Params, batch: Batch, rng: jax.Array | None = None, is_training: bool = False,
               compute_dtype: str = "float32") -> jax.Array:
        """Teacher-forced next-code logits `[B, image_length, image_vocab_size]` (float32)."""
        self.check_tokens(batch["text_tokens"], batch["image_tokens"])
        out = self.apply(params, "__call__", batch["text_tokens"], self.decoder_inputs(batch["image_tokens"]),
                         is_training, rng=rng, compute_dtype=compute_dtype)
        return out[..., : self.image_vocab_size].astype(jnp.float32)

    def full_logits(self, params: Params, text_tokens: jax.Array, decoder_inputs: jax.Array) -> jax.Array:
        """All lm_head outputs (codes, dalle-mini's extra rows, BOS), for comparisons with dalle-mini."""
        return self.apply(params, "__call__", text_tokens, decoder_inputs, False)

    def loss(self, params: Params, batch: Batch, rng: jax.Array | None = None, is_training: bool = True,
             compute_dtype: str = "float32"):
        logits = self.logits(params, batch, rng, is_training, compute_dtype)
        loss, acc = cross_entropy(logits, batch["image_tokens"])
        return loss, {"loss": loss, "accuracy": acc}

    def flops_per_example(self) -> float:
        c = self.config
        d, lt, li = c.d_model, c.max_text_length, c.image_length
        k = 3 if c.use_glu else 2
        glu_enc = c.use_glu if c.get("encoder_use_glu") is None else c.encoder_use_glu  # a BERT encoder has no GLU
        k_enc = 3 if glu_enc else 2
        enc = c.encoder_layers * (2 * lt * (4 * d * d + k_enc * d * c.encoder_ffn_dim) + 4 * lt * lt * d)
        dec = c.decoder_layers * (2 * li * (6 * d * d + k * d * c.decoder_ffn_dim) + 2 * lt * 2 * d * d
                                  + 4 * li * li * d + 4 * li * lt * d)
        head = 2 * li * d * (c.image_vocab_size + c.image_extra_tokens + 1)
        return float(3 * (enc + dec + head))

    def encoder_param_filter(self, path: Any) -> bool:
        """Text-encoder params (its embeddings included): what `train.freeze_encoder` freezes."""
        return "/encoder/" in "/" + _path(path)

    def embedding_param_filter(self, path: Any) -> bool:
        """What dalle-mini's `embeddings_only` retrains: decoder embeddings and their norms, final_ln, lm_head."""
        p = _path(path)
        return bool(re.search(r"decoder/(embed_tokens|embed_positions|layernorm_embedding|final_ln)/", p)
                    or "lm_head/" in p)


class DecoderOnlyModel(_Model):
    kind = "decoder_only"

    def _module(self, policy):
        return decoder_only.DecoderOnly(self.config, policy)

    @property
    def text_vocab_size(self) -> int:
        return self.config.text_vocab_size

    def _forward(self, params, batch, rng, is_training, compute_dtype):
        self.check_tokens(batch["text_tokens"], batch["image_tokens"])
        text_logits, image_logits = self.apply(
            params, "__call__", batch["text_tokens"], self.decoder_inputs(batch["image_tokens"]), is_training,
            rng=rng, compute_dtype=compute_dtype)
        return text_logits, image_logits.astype(jnp.float32)

    def logits(self, params: Params, batch: Batch, rng: jax.Array | None = None, is_training: bool = False,
               compute_dtype: str = "float32") -> jax.Array:
        return self._forward(params, batch, rng, is_training, compute_dtype)[1]

    def loss(self, params: Params, batch: Batch, rng: jax.Array | None = None, is_training: bool = True,
             compute_dtype: str = "float32"):
        c = self.config
        text_logits, image_logits = self._forward(params, batch, rng, is_training, compute_dtype)
        image_loss, acc = cross_entropy(image_logits, batch["image_tokens"])
        metrics = {"image_loss": image_loss, "accuracy": acc}
        loss = c.image_loss_weight * image_loss
        if text_logits is not None:
            targets = batch["text_tokens"][:, 1:]
            text_loss, text_acc = cross_entropy(text_logits, targets, targets != decoder_only.PAD_ID)
            loss = loss + c.text_loss_weight * text_loss
            metrics.update(text_loss=text_loss, text_accuracy=text_acc)
        metrics["loss"] = loss
        return loss, metrics

    def flops_per_example(self) -> float:
        c = self.config
        d, lt, li = c.d_model, c.max_text_length, c.image_length
        t = lt + li
        k = 3 if c.use_glu else 2
        body = c.num_layers * (2 * t * (4 * d * d + k * d * c.ffn_dim) + 4 * t * t * d)
        head = 2 * li * d * c.image_vocab_size + (2 * (lt - 1) * d * c.text_vocab_size if c.text_loss_weight > 0 else 0)
        return float(3 * (body + head))

    def encoder_param_filter(self, path: Any) -> bool:
        """The decoder-only model has no separate encoder; its text side is the text embedding table."""
        return "text_embed/" in _path(path)

    def embedding_param_filter(self, path: Any) -> bool:
        return bool(re.search(r"(text_embed|image_embed|embed_positions|layernorm_embedding|final_ln|image_head|"
                              r"text_head|image_code_\w+)/|image_bos$", _path(path)))


Model = _Model


def random_params(model: _Model, seed: int = 0, scale: float = 0.1) -> Params:
    """Random weights of the right structure drawn on the host with numpy: no `model.init` compilation (threefry
    is slow to compile on CPU), for tests and speed benchmarks. Norm scales are `1 + scale * noise` and every
    other parameter, norm biases included, is noise, so every architecture switch influences the output."""
    rs = np.random.RandomState(seed)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0))

    def one(path, leaf):
        name = _path(path)
        x = rs.standard_normal(leaf.shape).astype(np.float32)
        if name.endswith("/scale") or name.endswith("head_scale"):
            return jnp.asarray(1.0 + scale * x)
        if "embed" in name:
            return jnp.asarray(5 * scale * x)
        return jnp.asarray(scale * x)

    return jax.tree_util.tree_map_with_path(one, abstract)


def _text_to_image_kind(model_config: ConfigDict) -> kinds.ModelKind:
    name = model_config.get("kind", "")
    try:
        kind = kinds.get(name)
    except registry.UnknownNameError as e:
        raise config_lib.ConfigError(str(e)) from None
    if not kind.text_to_image:
        known = [k for k in registry.MODEL_KINDS.names() if kinds.get(k).text_to_image]
        raise config_lib.ConfigError(f"model.kind = {name!r} is not a text-to-image model (those are: {known})")
    return kind


def build_model(model_config: ConfigDict) -> _Model:
    """The token model of a text-to-image `model` section (its kind's `model` class); missing keys take defaults."""
    return registry.resolve(_text_to_image_kind(model_config).model)(model_config)
