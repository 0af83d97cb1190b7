"""Schemas of the text-conditional GAN's config sections: `model` of kind "gan" (the architecture: sentence encoder,
generator, discriminator) and `gan_loss` (what training optimizes). Registered by dalle/kinds/gan.py.

Light on purpose: no jax import (configs are validated before any work starts).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib

GEN_NORMS = ("layer", "instance", "none")
FIRST_SIDE = 4  # the generator starts from a 4x4 map; each further entry of gen_channels doubles the side


def model_defaults() -> ConfigDict:
    """A 32 px GAN whose sentence encoder is the shapes CLIP's text tower (configs/clip_shapes.py), so that
    `text_encoder_init` can point at that CLIP unchanged."""
    c = ConfigDict()
    c.kind = "gan"
    c.image_size = 32
    c.z_dim = 64  # noise per image
    c.cond_dim = 64  # the sentence embedding is projected to this before joining the noise
    # Generator: a FIRST_SIDE x FIRST_SIDE map with gen_channels[0] channels, then one upsampling residual block
    # per further entry, so image_size = 4 * 2 ** (len(gen_channels) - 1).
    c.gen_channels = (128, 64, 32, 16)
    # Per-sample conditional norms (no running statistics): an image depends only on its own noise and caption.
    c.gen_norm = "layer"  # layer (keeps relative channel magnitudes) | instance | none
    # Discriminator: one downsampling residual block per entry (32 -> 16 -> 8 -> 4 here), then sum pooling.
    c.disc_channels = (32, 64, 128)
    # Sentence encoder: the CLIP text tower (dalle/modeling/clip), pooled at the first EOS token.
    c.context_length = 18  # = data.max_text_length
    c.vocab_size = 128
    c.embed_dim = 64  # sentence embedding size (the CLIP's embed_dim when initialised from one)
    c.text_width = 128
    c.text_layers = 2
    c.text_heads = 4
    c.text_mlp_dim = 512
    c.activation = "gelu"  # quick_gelu | gelu, as the CLIP's
    c.text_encoder_init = ""  # a CLIP model dir whose text tower initialises the sentence encoder ("" = random)
    c.train_text_encoder = True  # trained by the discriminator's loss; false: kept as initialised
    return c


def check_model(m: ConfigDict, config: ConfigDict):
    for key in ("image_size", "z_dim", "cond_dim", "context_length", "vocab_size", "embed_dim", "text_width",
                "text_layers", "text_heads", "text_mlp_dim"):
        if m[key] <= 0:
            yield f"model.{key} = {m[key]} must be positive"
    for key in ("gen_channels", "disc_channels"):
        if not m[key] or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in m[key]):
            yield f"model.{key} = {tuple(m[key])} must be a non-empty tuple of positive ints"
            return
    side = FIRST_SIDE * 2 ** (len(m.gen_channels) - 1)
    if side != m.image_size:
        yield (f"model.gen_channels has {len(m.gen_channels)} entries, which make {side} px images (4 * 2 ** "
               f"(entries - 1)), not model.image_size = {m.image_size}")
    if m.image_size % 2 ** len(m.disc_channels):
        yield (f"model.disc_channels has {len(m.disc_channels)} downsampling blocks, which do not divide "
               f"model.image_size = {m.image_size} evenly")
    if m.text_heads > 0 and m.text_width % m.text_heads:
        yield f"model.text_width = {m.text_width} is not divisible by model.text_heads = {m.text_heads}"
    if m.gen_norm not in GEN_NORMS:
        yield f"model.gen_norm = {m.gen_norm!r} is not one of {GEN_NORMS}"
    if m.activation not in ("quick_gelu", "gelu"):
        yield f"model.activation = {m.activation!r} is not 'quick_gelu' or 'gelu'"
    if not m.train_text_encoder and not m.text_encoder_init:
        yield ("model.train_text_encoder = False without model.text_encoder_init would condition on a random, "
               "frozen sentence encoder; set text_encoder_init to a CLIP model dir or train the encoder")
    data = config.get("data") if isinstance(config, ConfigDict) else None
    if data is not None:
        if "image_size" in data and data.image_size != m.image_size:
            yield f"model.image_size = {m.image_size} must equal data.image_size = {data.image_size}"
        if "max_text_length" in data and data.max_text_length != m.context_length:
            yield (f"model.context_length = {m.context_length} must equal data.max_text_length = "
                   f"{data.max_text_length} (captions are tokenized to that length)")
        if "vocab_size" in data and m.vocab_size < data.vocab_size:
            yield f"model.vocab_size = {m.vocab_size} is smaller than data.vocab_size = {data.vocab_size}"
    train = config.get("train") if isinstance(config, ConfigDict) else None
    if train is not None and train.get("grad_accum_steps", 1) != 1:
        yield (f"train.grad_accum_steps = {train.grad_accum_steps}: the GAN task steps generator and "
               "discriminator on whole batches; use 1")


def loss_defaults() -> ConfigDict:
    """Hinge losses with the matching-aware term of Reed et al. 2016, optional R1 and XMC-GAN contrastive terms."""
    c = ConfigDict()
    # Discriminator: hinge(real, its caption) + (1 - w) hinge(fake) + w hinge(real, another caption) (GAN-CLS).
    c.mismatch_weight = 0.5
    c.r1_gamma = 0.0  # > 0: R1 penalty gamma/2 E|grad_x D(x, caption)|^2 on real pairs (0 = no penalty)
    # XMC-GAN (Zhang et al. 2021): > 0 adds image-sentence InfoNCE on the discriminator's features (D: real
    # pairs; G: fake pairs) and fake-real image InfoNCE for the generator, each times this weight.
    c.contrastive_weight = 0.0
    c.contrastive_temperature = 0.1
    c.disc_lr_scale = 1.0  # discriminator (and trained sentence encoder) lr = train.optimizer.lr * this
    c.ema_decay = 0.999  # generator weights averaged for sampling and export (0 = off)
    c.summary_noise = 4  # images per prompt in the TensorBoard sample grid (0 = none)
    return c


def check_loss(c: ConfigDict, config: ConfigDict):
    if not 0.0 <= c.mismatch_weight < 1.0:
        yield f"gan_loss.mismatch_weight = {c.mismatch_weight} must be in [0, 1)"
    for key in ("r1_gamma", "contrastive_weight"):
        if c[key] < 0:
            yield f"gan_loss.{key} = {c[key]} must be >= 0"
    for key in ("contrastive_temperature", "disc_lr_scale"):
        if c[key] <= 0:
            yield f"gan_loss.{key} = {c[key]} must be positive"
    if not 0.0 <= c.ema_decay < 1.0:
        yield f"gan_loss.ema_decay = {c.ema_decay} must be in [0, 1) (0 = off)"
    if c.summary_noise < 0:
        yield f"gan_loss.summary_noise = {c.summary_noise} must be >= 0"
    model = config.get("model")
    if model is None or model.get("kind") != "gan":
        yield "gan_loss is set but model.kind is not 'gan'"


config_lib.register_schema("gan_loss", loss_defaults, check_loss)
