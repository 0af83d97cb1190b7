"""A text-conditional GAN in Haiku: sentence encoder, generator, projection discriminator.

Why this design:
- The sentence encoder is the CLIP text tower of dalle/modeling/clip (causal transformer pooled at the first EOS),
  so a trained shapes CLIP's `text/...` params initialise it unchanged (`model.text_encoder_init`). Embeddings are
  L2-normalized: the generator and discriminator see directions, as CLIP compares them.
- The generator maps (noise z, sentence s) to an image with upsampling residual blocks whose norms take their gain
  and bias from [z, W s] (conditional normalization as in BigGAN). The norms are per sample (layer or instance
  norm, no running statistics), so an image depends only on its own noise and caption: sampling is a pure
  function and a prompt's images do not change with what else is in the batch.
- The discriminator is a residual downsampling CNN, sum-pooled to features phi(x), scored by the projection of
  Miyato & Koyama 2018: D(x, s) = psi(phi(x)) + <V s, phi(x)>. phi(x) does not depend on the caption, so the
  mismatched-caption term of Reed et al. 2016 and XMC-GAN's contrastive terms cost no extra image pass.

    gan = GAN(config.model, contrastive=False)
    params = gan.init(jax.random.PRNGKey(0))  # {"text", "generator", "discriminator"}
    s = gan.encode_text(params["text"], tokens)  # [B, embed_dim], unit norm
    images = gan.generate(params["generator"], noise(seed, range(B), gan.cfg.z_dim), s)  # [-1, 1]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from dalle import sharding
from dalle.modeling.clip import model as clip_lib
from dalle.modeling.gan import losses
from dalle.modeling.gan.schema import FIRST_SIDE  # the generator's first map is FIRST_SIDE x FIRST_SIDE

Params = Any
TEXT_PREFIX = "text"  # the sentence encoder's params are the CLIP's text tower: "text/...", "text/layer_0/..."


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """Architecture of one GAN; `from_config` reads a `model` section of kind "gan" (schema.py)."""

    image_size: int = 32
    z_dim: int = 64
    cond_dim: int = 64
    gen_channels: tuple[int, ...] = (128, 64, 32, 16)
    gen_norm: str = "layer"
    disc_channels: tuple[int, ...] = (32, 64, 128)
    context_length: int = 18
    vocab_size: int = 128
    embed_dim: int = 64
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_mlp_dim: int = 512
    activation: str = "gelu"

    @classmethod
    def from_config(cls, m: Mapping[str, Any]) -> "GANConfig":
        kwargs = {f.name: m[f.name] for f in dataclasses.fields(cls) if f.name in m}
        for key in ("gen_channels", "disc_channels"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        cfg = cls(**kwargs)
        side = FIRST_SIDE * 2 ** (len(cfg.gen_channels) - 1)
        if side != cfg.image_size:
            raise ValueError(f"model.gen_channels {cfg.gen_channels} make {side} px images, not model.image_size = "
                             f"{cfg.image_size}")
        if cfg.image_size % 2 ** len(cfg.disc_channels):
            raise ValueError(f"model.disc_channels {cfg.disc_channels} downsample model.image_size = "
                             f"{cfg.image_size} unevenly")
        return cfg

    def text_tower(self, eos_id: int) -> clip_lib.CLIPConfig:
        """The CLIP whose text tower is the sentence encoder (its vision fields are unused)."""
        return clip_lib.CLIPConfig(
            embed_dim=self.embed_dim, context_length=self.context_length, vocab_size=self.vocab_size,
            text_width=self.text_width, text_layers=self.text_layers, text_heads=self.text_heads,
            text_mlp_dim=self.text_mlp_dim, activation=self.activation, text_pool="eos", eos_id=eos_id)


# ----------------------------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------------------------
def upsample(x: jax.Array) -> jax.Array:
    """Nearest-neighbour x2 (checkerboard-free, unlike strided transposed convolutions)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample(x: jax.Array) -> jax.Array:
    """2x2 average pooling."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class ConditionalNorm(hk.Module):
    """Per-sample normalization whose gain and bias are linear in the condition; both start at identity."""

    def __init__(self, kind: str, name: str | None = None):
        super().__init__(name=name)
        self.kind = kind

    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        if self.kind != "none":
            axes = (1, 2, 3) if self.kind == "layer" else (1, 2)
            mean = jnp.mean(x, axis=axes, keepdims=True)
            var = jnp.var(x, axis=axes, keepdims=True)
            x = (x - mean) * jax.lax.rsqrt(var + 1e-5)
        ch = x.shape[-1]
        gain = hk.Linear(ch, w_init=jnp.zeros, name="dense_gain")(cond)
        bias = hk.Linear(ch, w_init=jnp.zeros, name="dense_bias")(cond)
        return x * (1.0 + gain[:, None, None, :]) + bias[:, None, None, :]


class UpBlock(hk.Module):
    """norm -> relu -> up -> conv3 -> norm -> relu -> conv3, plus up -> conv1 skip (BigGAN's generator block)."""

    def __init__(self, channels: int, norm: str, name: str | None = None):
        super().__init__(name=name)
        self.channels, self.norm = channels, norm

    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        h = jax.nn.relu(ConditionalNorm(self.norm, name="norm_1")(x, cond))
        h = hk.Conv2D(self.channels, 3, name="conv_1")(upsample(h))
        h = jax.nn.relu(ConditionalNorm(self.norm, name="norm_2")(h, cond))
        h = hk.Conv2D(self.channels, 3, name="conv_2")(h)
        return h + hk.Conv2D(self.channels, 1, name="conv_skip")(upsample(x))


class Generator(hk.Module):
    def __init__(self, cfg: GANConfig, name: str = "generator"):
        super().__init__(name=name)
        self.cfg = cfg

    def __call__(self, z: jax.Array, sentence: jax.Array) -> jax.Array:
        """z [B, z_dim], sentence [B, embed_dim] -> images [B, S, S, 3] in [-1, 1]."""
        cfg = self.cfg
        cond = jnp.concatenate([z, hk.Linear(cfg.cond_dim, name="dense_text")(sentence)], axis=-1)
        ch = cfg.gen_channels[0]
        h = hk.Linear(FIRST_SIDE * FIRST_SIDE * ch, name="dense_in")(cond).reshape(-1, FIRST_SIDE, FIRST_SIDE, ch)
        for i, channels in enumerate(cfg.gen_channels[1:]):
            h = UpBlock(channels, cfg.gen_norm, name=f"block_{i}")(h, cond)
            h = sharding.constrain(h, ("batch", None, None, None))
        h = jax.nn.relu(ConditionalNorm(cfg.gen_norm, name="norm_out")(h, cond))
        return jnp.tanh(hk.Conv2D(3, 3, name="conv_out")(h))


# ----------------------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------------------
class DownBlock(hk.Module):
    """(lrelu) -> conv3 -> lrelu -> conv3 -> pool, plus pool -> conv1 skip (SNGAN's discriminator block)."""

    def __init__(self, channels: int, first: bool, name: str | None = None):
        super().__init__(name=name)
        self.channels, self.first = channels, first

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x if self.first else jax.nn.leaky_relu(x, 0.2)  # the first block sees pixels: no activation before
        h = hk.Conv2D(self.channels, 3, name="conv_1")(h)
        h = hk.Conv2D(self.channels, 3, name="conv_2")(jax.nn.leaky_relu(h, 0.2))
        return downsample(h) + hk.Conv2D(self.channels, 1, name="conv_skip")(downsample(x))


class Discriminator(hk.Module):
    def __init__(self, cfg: GANConfig, name: str = "discriminator"):
        super().__init__(name=name)
        self.cfg = cfg

    def features(self, images: jax.Array) -> jax.Array:
        """images [B, S, S, 3] in [-1, 1] -> phi(x) [B, F] (sum-pooled)."""
        h = images
        for i, channels in enumerate(self.cfg.disc_channels):
            h = DownBlock(channels, first=i == 0, name=f"block_{i}")(h)
            h = sharding.constrain(h, ("batch", None, None, None))
        return jnp.sum(jax.nn.leaky_relu(h, 0.2), axis=(1, 2))

    def logits(self, features: jax.Array, sentence: jax.Array) -> jax.Array:
        """The projection discriminator's score [B] of (phi(x), s)."""
        psi = hk.Linear(1, name="dense_out")(features)[:, 0]
        projected = hk.Linear(features.shape[-1], with_bias=False, name="dense_project")(sentence)
        return losses.projection_logits(psi, features, projected)

    def contrast(self, features: jax.Array, sentence: jax.Array) -> tuple[jax.Array, jax.Array]:
        """XMC-GAN's heads: image and sentence vectors in one space (compared by cosine)."""
        d = self.cfg.embed_dim
        return (hk.Linear(d, name="dense_contrast_image")(features),
                hk.Linear(d, name="dense_contrast_text")(sentence))


# ----------------------------------------------------------------------------------------------------------------
# The model: pure functions over {"text", "generator", "discriminator"} params
# ----------------------------------------------------------------------------------------------------------------
class GAN:
    """Haiku transforms of the three networks. `contrastive` adds the discriminator's XMC-GAN heads."""

    def __init__(self, model_config: Mapping[str, Any] | GANConfig, contrastive: bool = False, eos_id: int = -1):
        self.cfg = model_config if isinstance(model_config, GANConfig) else GANConfig.from_config(model_config)
        if self.cfg.text_width % self.cfg.text_heads:
            raise ValueError(f"model.text_width = {self.cfg.text_width} is not divisible by model.text_heads = "
                             f"{self.cfg.text_heads}")
        if eos_id < 0:
            from dalle.tokenizers.sentencepiece import EOS_ID

            eos_id = EOS_ID
        self.contrastive = contrastive
        tower = self.cfg.text_tower(eos_id)
        self._text = hk.without_apply_rng(hk.transform(lambda tokens: clip_lib._encode_text(tower, tokens)))
        self._gen = hk.without_apply_rng(hk.transform(lambda z, s: Generator(self.cfg)(z, s)))
        self._disc = hk.without_apply_rng(hk.multi_transform(self._disc_fns))
        self._init_jit = jax.jit(self._init)

    def _disc_fns(self):
        d = Discriminator(self.cfg)

        def init(images, sentence):
            h = d.features(images)
            out = d.logits(h, sentence)
            if self.contrastive:
                d.contrast(h, sentence)
            return out

        return init, (d.features, d.logits, d.contrast)

    # --- params ------------------------------------------------------------------------------------------------
    def init(self, rng: jax.Array) -> dict[str, Params]:
        """Fresh {"text", "generator", "discriminator"} params; jitted (eager Haiku init is ~10x slower on CPU)."""
        return self._init_jit(rng)

    def _init(self, rng: jax.Array) -> dict[str, Params]:
        c = self.cfg
        k_text, k_gen, k_disc = jax.random.split(rng, 3)
        s = jnp.zeros((1, c.embed_dim), jnp.float32)
        return {"text": self._text.init(k_text, jnp.zeros((1, c.context_length), jnp.int32)),
                "generator": self._gen.init(k_gen, jnp.zeros((1, c.z_dim), jnp.float32), s),
                "discriminator": self._disc.init(k_disc, jnp.zeros((1, c.image_size, c.image_size, 3)), s)}

    # --- forward -----------------------------------------------------------------------------------------------
    def encode_text(self, params: Params, tokens: jax.Array) -> jax.Array:
        """tokens int32 [B, context_length] -> unit sentence embeddings [B, embed_dim]."""
        return losses.l2_normalize(self._text.apply(params, tokens))

    def generate(self, params: Params, z: jax.Array, sentence: jax.Array) -> jax.Array:
        return self._gen.apply(params, z, sentence)

    def features(self, params: Params, images: jax.Array) -> jax.Array:
        return self._disc.apply[0](params, images)

    def logits(self, params: Params, features: jax.Array, sentence: jax.Array) -> jax.Array:
        return self._disc.apply[1](params, features, sentence)

    def contrast(self, params: Params, features: jax.Array, sentence: jax.Array) -> tuple[jax.Array, jax.Array]:
        if not self.contrastive:
            raise ValueError("this GAN was built without contrastive heads (gan_loss.contrastive_weight = 0)")
        return self._disc.apply[2](params, features, sentence)


def noise(seed: int, indices: Iterable[int], z_dim: int) -> np.ndarray:
    """float32 [len(indices), z_dim]: image i's noise depends on (seed, i) only, so the i-th image of every prompt
    shares its noise (prompts compare on equal terms) and image i is the same however many are drawn."""
    key = jax.random.PRNGKey(seed)
    idx = jnp.asarray(list(indices), jnp.uint32)
    if idx.size == 0:
        return np.zeros((0, z_dim), np.float32)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (z_dim,)))(idx)
    return np.asarray(z, np.float32)


def to_uint8(images: jax.Array) -> jax.Array:
    """[-1, 1] -> uint8 [0, 255]."""
    return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def num_params(params: Params) -> int:
    return int(sum(np.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)))


# Convolutions split on output channels over `model` when they divide (as the VQGAN's), small dense layers
# replicated; the sentence encoder's params follow the CLIP's rules.
PARTITION_RULES: tuple[tuple[str, tuple], ...] = (
    (r"conv_\w+/w$", ("spatial", "spatial", "conv_in", "conv_out")),
    (r"conv_\w+/b$", ("conv_out",)),
    (r"dense_\w+/w$", (None, None)),
    (r"dense_\w+/b$", (None,)),
) + clip_lib.param_rules()
sharding.register_partition_rules("gan", PARTITION_RULES)
