"""DALL·E's discrete VAE in Haiku (NHWC), module for module as the `dall-e` package builds it.

Encoder (`dall_e/encoder.py`): a 7x7 `input` conv, `group_count` groups of `n_blk_per_group` residual blocks
(widths n_hid * 1, 2, 4, 8 for the published 4 groups) with 2x2 max-pooling after every group but the last, then
ReLU and a 1x1 `output/conv` to `vocab_size` logits per position. Decoder (`dall_e/decoder.py`): a 1x1 `input` conv
from the (relaxed) one-hot codes to `n_init` channels, groups of blocks with widths n_hid * 8, 4, 2, 1 and 2x nearest
upsampling after every group but the last, then ReLU and a 1x1 `output/conv` to 2 * output_channels: logit-Laplace
locations (in logit space) and log-scales per pixel value. Every block is `id_path(x) + post_gain * res_path(x)`
with post_gain = 1 / (group_count * n_blk_per_group) ** 2, id_path a 1x1 conv when the width changes.

Pixels enter the encoder mapped by `map_pixels` ([0, 1] -> [eps, 1 - eps], eps = 0.1) and leave the decoder as
`unmap_pixels(sigmoid(locations))`. Param paths mirror the torch state-dict keys with `.` -> `/`:

    blocks.group_2.block_1.res_path.conv_3.w  ->  encoder/group_2/block_1/res_path/conv_3 : w  (OIHW -> HWIO)
    blocks.output.conv.b                      ->  decoder/output/conv                     : b
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from dalle import sharding
from dalle.modeling import param_check
from dalle.modeling.vqgan.model import init_from_rules

Params = Mapping[str, Mapping[str, jax.Array]]

LOGIT_LAPLACE_EPS = 0.1  # `dall_e.utils.logit_laplace_eps`


# ----------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DVAEConfig:
    """The architecture, hashable so it can key jit caches. Built from the `model` section (`from_config`)."""

    resolution: int = 256
    input_channels: int = 3
    output_channels: int = 3
    n_hid: int = 256
    n_blk_per_group: int = 2
    n_init: int = 128
    vocab_size: int = 8192
    group_count: int = 4

    @classmethod
    def from_config(cls, config: ConfigDict | Mapping[str, Any]) -> "DVAEConfig":
        """Accepts the whole config (uses its `model` section) or the model section itself."""
        section = config["model"] if "model" in config else config
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(section[k]) for k in section.keys() if k in names})

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.group_count - 1)

    @property
    def token_grid(self) -> int:
        """Codes per side at the configured resolution."""
        return self.resolution // self.downsample_factor

    @property
    def post_gain(self) -> float:
        return 1.0 / (self.group_count * self.n_blk_per_group) ** 2


# ----------------------------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------------------------
def map_pixels(x: jax.Array, eps: float = LOGIT_LAPLACE_EPS) -> jax.Array:
    """[0, 1] -> [eps, 1 - eps]: keeps pixel values off the logit-Laplace's singular ends."""
    return (1.0 - 2.0 * eps) * x + eps


def unmap_pixels(x: jax.Array, eps: float = LOGIT_LAPLACE_EPS) -> jax.Array:
    """Inverse of map_pixels, clipped to [0, 1]."""
    return jnp.clip((x - eps) / (1.0 - 2.0 * eps), 0.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------
class Conv2d(hk.Module):
    """`dall_e.utils.Conv2d`: odd square kernel, 'same' zero padding, params `w` (HWIO here) and `b`; init
    N(0, 1 / fan_in) weights and zero biases."""

    def __init__(self, n_out: int, kw: int, dtype: Any = jnp.float32, name: str | None = None):
        super().__init__(name=name)
        self.n_out, self.kw, self.dtype = n_out, kw, dtype

    def params(self, n_in: int) -> tuple[jax.Array, jax.Array]:
        std = 1.0 / np.sqrt(n_in * self.kw ** 2)
        w = hk.get_parameter("w", (self.kw, self.kw, n_in, self.n_out), init=hk.initializers.RandomNormal(std))
        b = hk.get_parameter("b", (self.n_out,), init=jnp.zeros)
        return w, b

    def __call__(self, x: jax.Array) -> jax.Array:
        w, b = self.params(x.shape[-1])
        p = (self.kw - 1) // 2
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (1, 1), ((p, p), (p, p)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + b.astype(y.dtype)


class ResBlock(hk.Module):
    """`EncoderBlock` / `DecoderBlock`: id_path(x) + post_gain * res_path(x). The res path is four ReLU-conv
    pairs to n_out / 4, n_out / 4, n_out / 4, n_out channels; the kernels differ: encoder 3, 3, 3, 1, decoder
    1, 3, 3, 3."""

    def __init__(self, n_out: int, kernels: tuple[int, int, int, int], post_gain: float, dtype: Any,
                 name: str | None = None):
        super().__init__(name=name)
        self.n_out, self.kernels, self.post_gain, self.dtype = n_out, kernels, post_gain, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        n_hid = self.n_out // 4
        widths = (n_hid, n_hid, n_hid, self.n_out)
        identity = x if x.shape[-1] == self.n_out else Conv2d(self.n_out, 1, self.dtype, name="id_path")(x)
        h = x
        with hk.name_scope("res_path"):
            for i, (width, kw) in enumerate(zip(widths, self.kernels)):
                h = Conv2d(width, kw, self.dtype, name=f"conv_{i + 1}")(jax.nn.relu(h))
        return identity + self.post_gain * h


ENCODER_KERNELS = (3, 3, 3, 1)
DECODER_KERNELS = (1, 3, 3, 3)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Encoder(hk.Module):
    """Mapped pixels [B, H, W, C] -> float32 logits [B, H/f, W/f, vocab_size] (with `return_features`, also
    the features the output conv reads: relu of the last group's output, [B, H/f, W/f, n_hid * 2 ** (groups-1)])."""

    def __init__(self, cfg: DVAEConfig, dtype: Any = jnp.float32, name: str | None = "encoder"):
        super().__init__(name=name)
        self.cfg, self.dtype = cfg, dtype

    def __call__(self, x: jax.Array, return_features: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        h = Conv2d(cfg.n_hid, 7, self.dtype, name="input")(x)
        for g in range(cfg.group_count):
            width = cfg.n_hid * 2 ** g
            with hk.name_scope(f"group_{g + 1}"):
                for i in range(cfg.n_blk_per_group):
                    h = ResBlock(width, ENCODER_KERNELS, cfg.post_gain, self.dtype, name=f"block_{i + 1}")(h)
            if g != cfg.group_count - 1:
                h = max_pool_2x2(h)
        with hk.name_scope("output"):
            # `dall-e` keeps this conv in float32 even under mixed precision: the logits pick the codes.
            features = jax.nn.relu(h).astype(jnp.float32)
            logits = Conv2d(cfg.vocab_size, 1, jnp.float32, name="conv")(features).astype(jnp.float32)
        return (features, logits) if return_features else logits


class Decoder(hk.Module):
    """Codes (int [B, h, w]) or relaxed one-hots (float [B, h, w, vocab_size]) -> float32 logit-Laplace statistics
    [B, h*f, w*f, 2 * output_channels]: locations first, then log-scales."""

    def __init__(self, cfg: DVAEConfig, dtype: Any = jnp.float32, name: str | None = "decoder"):
        super().__init__(name=name)
        self.cfg, self.dtype = cfg, dtype

    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.cfg
        # The 1x1 conv over one-hot codes: a lookup of its weight rows for integer codes (the same numbers, no
        # [B, h, w, vocab] tensor), a matmul for relaxed ones. Kept in float32 like `dall-e`'s.
        w, b = Conv2d(cfg.n_init, 1, jnp.float32, name="input").params(cfg.vocab_size)
        if jnp.issubdtype(z.dtype, jnp.integer):
            h = jnp.take(w[0, 0], z, axis=0) + b
        else:
            h = jnp.einsum("bhwv,vc->bhwc", z.astype(jnp.float32), w[0, 0]) + b
        for g in range(cfg.group_count):
            width = cfg.n_hid * 2 ** (cfg.group_count - 1 - g)
            with hk.name_scope(f"group_{g + 1}"):
                for i in range(cfg.n_blk_per_group):
                    h = ResBlock(width, DECODER_KERNELS, cfg.post_gain, self.dtype, name=f"block_{i + 1}")(h)
            if g != cfg.group_count - 1:
                h = upsample_nearest_2x(h)
        with hk.name_scope("output"):
            out = Conv2d(2 * cfg.output_channels, 1, self.dtype, name="conv")(jax.nn.relu(h))
        return out.astype(jnp.float32)


def stats_to_images(stats: jax.Array, channels: int) -> jax.Array:
    """Decoder statistics -> images in [0, 1]: the logit-Laplace locations squashed and unmapped (the
    distribution's median, what `dall-e`'s usage notebook shows)."""
    return unmap_pixels(jax.nn.sigmoid(stats[..., :channels]))


# ----------------------------------------------------------------------------------------------------------------
# The model as pure functions
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DVAE:
    """Pure functions over a params dict {"encoder/...": ..., "decoder/...": ...}. `dtype` is the compute dtype of
    the residual convs (params stay float32; the logits and the decoder's input conv are always float32)."""

    cfg: DVAEConfig
    dtype: Any = jnp.float32

    def _encoder(self, return_features: bool = False) -> hk.Transformed:
        return hk.without_apply_rng(hk.transform(lambda x: Encoder(self.cfg, self.dtype)(x, return_features)))

    def _decoder(self) -> hk.Transformed:
        return hk.without_apply_rng(hk.transform(lambda z: Decoder(self.cfg, self.dtype)(z)))

    def init(self, rng: jax.Array) -> Params:
        """`dall-e`'s init (conv weights N(0, 1 / fan_in), zero biases), drawn in one random call: separate draws
        per param cost XLA seconds of compile on CPU."""
        s = self.cfg.downsample_factor
        x = jax.ShapeDtypeStruct((1, s, s, self.cfg.input_channels), jnp.float32)
        z = jax.ShapeDtypeStruct((1, 1, 1), jnp.int32)
        abstract = {**jax.eval_shape(self._encoder().init, rng, x), **jax.eval_shape(self._decoder().init, rng, z)}

        def rule(module: str, name: str, shape: tuple[int, ...], siblings: Mapping[str, Any]):
            if name == "w":
                kh, kw, n_in, _ = shape
                return ("normal", 0.0, 1.0 / np.sqrt(kh * kw * n_in))
            return ("const", 0.0, 0.0)

        return init_from_rules(rng, abstract, rule)

    @staticmethod
    def _part(params: Params, prefix: str) -> Params:
        return {k: v for k, v in params.items() if k.startswith(prefix + "/")}

    def encoder_logits(self, params: Params, x: jax.Array) -> jax.Array:
        """Mapped pixels (map_pixels of [0, 1] images) [B, H, W, C] -> logits [B, H/f, W/f, vocab_size]."""
        x = sharding.constrain(x, ("batch", None, None, None))
        return self._encoder().apply(self._part(params, "encoder"), x)

    def encoder_features_and_logits(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(features, logits): the logits of `encoder_logits` and the features their 1x1 conv reads
        (logits = features @ encoder/output/conv w + b)."""
        x = sharding.constrain(x, ("batch", None, None, None))
        return self._encoder(True).apply(self._part(params, "encoder"), x)

    def decoder_stats(self, params: Params, z: jax.Array) -> jax.Array:
        """Codes [B, h, w] or relaxed one-hots [B, h, w, vocab] -> statistics [B, h*f, w*f, 2 * channels]."""
        out = self._decoder().apply(self._part(params, "decoder"), z)
        return sharding.constrain(out, ("batch", None, None, None))

    def encode(self, params: Params, images: jax.Array) -> jax.Array:
        """Images in [0, 1] [B, H, W, C] -> int32 codes [B, H/f, W/f]: the argmax of the logits, no noise (how
        DALL·E tokenizes images for its transformer)."""
        logits = self.encoder_logits(params, map_pixels(images.astype(jnp.float32)))
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def decode_codes(self, params: Params, codes: jax.Array) -> jax.Array:
        """int codes [B, h, w] -> images in [0, 1] [B, h*f, w*f, C]."""
        return stats_to_images(self.decoder_stats(params, codes), self.cfg.output_channels)


def num_params(params: Any) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


# ----------------------------------------------------------------------------------------------------------------
# Partition rules (dalle.sharding): convs split on their output channels over `model` when they divide (the
# encoder's logits over the vocabulary), the rest replicated.
# ----------------------------------------------------------------------------------------------------------------
PARTITION_RULES: tuple[tuple[str, tuple], ...] = (
    (r"^decoder/input/w$", ("spatial", "spatial", "codebook", "conv_out")),
    (r"/w$", ("spatial", "spatial", "conv_in", "conv_out")),
    (r"/b$", ("conv_out",)),
)
sharding.register_partition_rules("dvae", PARTITION_RULES)


def expected_param_shapes(cfg: DVAEConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    """{module: {param: shape}} of a model built from `cfg` (abstract: no memory is allocated)."""
    abstract = jax.eval_shape(lambda: DVAE(cfg).init(jax.random.key(0)))
    return {m: {n: tuple(v.shape) for n, v in ps.items()} for m, ps in abstract.items()}


def check_params(params: Params, cfg: DVAEConfig, what: str = "params") -> None:
    """Raises ParamMismatchError listing every missing, unexpected or misshapen param of `params`."""
    param_check.check_param_shapes(params, expected_param_shapes(cfg), "dVAE", what)
