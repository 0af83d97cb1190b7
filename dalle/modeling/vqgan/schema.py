"""Schemas of the VQGAN config sections (see dalle/config.py): `model` with kind "vqgan", and `vqgan_loss`.

Kept free of jax imports: configs are validated before any work starts.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib


def model_defaults() -> ConfigDict:
    """The taming-transformers ddconfig + quantizer; defaults are the published f16/16384 ImageNet model."""
    c = ConfigDict()
    c.kind = "vqgan"
    c.resolution = 256  # training/nominal image side; attention placement is defined relative to it
    c.in_channels = 3
    c.out_ch = 3
    c.ch = 128
    c.ch_mult = (1, 1, 2, 2, 4)  # one level per entry; downsampling factor = 2 ** (len - 1)
    c.num_res_blocks = 2
    c.attn_resolutions = (16,)  # feature-map sides (at `resolution`) that get self-attention blocks
    c.z_channels = 256
    c.resamp_with_conv = True
    c.dropout = 0.0
    c.n_embed = 16384  # codebook size
    c.embed_dim = 256
    c.beta = 0.25  # commitment weight
    # taming's quantizer applies beta to the codebook term instead (its `legacy=True` default); true reproduces it.
    c.legacy_loss = False
    c.norm_groups = 32  # taming hard-codes 32; smaller only for toy models
    c.l2_norm_codes = False  # ViT-VQGAN's l2-normalized codebook (cosine matching); taming's models: False
    c.norm_eps = 1e-6
    return c


def check_model(m: ConfigDict, _: ConfigDict):
    for key in ("resolution", "in_channels", "out_ch", "ch", "num_res_blocks", "z_channels", "n_embed",
                "embed_dim", "norm_groups"):
        if m[key] <= 0:
            yield f"model.{key} = {m[key]} must be positive"
    if not m.ch_mult or any((not isinstance(v, int)) or v <= 0 for v in m.ch_mult):
        yield f"model.ch_mult = {tuple(m.ch_mult)} must be a non-empty tuple of positive ints"
        return
    factor = 2 ** (len(m.ch_mult) - 1)
    if m.resolution % factor:
        yield (f"model.resolution = {m.resolution} is not divisible by the downsampling factor {factor} "
               f"(2 ** (len(model.ch_mult) - 1))")
    levels = {m.resolution // 2 ** i for i in range(len(m.ch_mult))}
    for r in m.attn_resolutions:
        if r not in levels:
            yield (f"model.attn_resolutions contains {r}, which is not a feature-map side of this model "
                   f"({sorted(levels, reverse=True)})")
    if m.norm_groups > 0:
        for name, channels in [("ch", m.ch)] + [(f"ch*ch_mult[{i}]", m.ch * v) for i, v in enumerate(m.ch_mult)]:
            if channels % m.norm_groups:
                yield f"model.{name} = {channels} channels do not split into model.norm_groups = {m.norm_groups}"
                break
    if not 0.0 <= m.dropout < 1.0:
        yield f"model.dropout = {m.dropout} must be in [0, 1)"
    if m.beta < 0:
        yield f"model.beta = {m.beta} must be >= 0"
    if m.norm_eps <= 0:
        yield f"model.norm_eps = {m.norm_eps} must be positive"


def loss_defaults() -> ConfigDict:
    """Training losses and options of the VQGAN task (taming's VQLPIPSWithDiscriminator + extras)."""
    c = ConfigDict()
    c.l1_weight = 1.0  # taming's pixelloss_weight
    c.l2_weight = 0.0
    # > 0: pixels that stand out from the image's background (its per-channel median colour) weigh up to
    # 1 + foreground_weight in the pixel loss. On plain-background images (synthetic worlds, emoji) the few object
    # pixels carry the content, and an unweighted loss lets small shapes blur into blobs at a fine PSNR.
    c.foreground_weight = 0.0
    c.codebook_weight = 1.0  # weight of the quantizer loss (codebook + beta * commitment)
    c.perceptual_weight = 0.0  # off by default: needs a feature network file
    c.perceptual_net = ""  # .npz of VGG16 `features.N.weight/bias` (+ optional LPIPS `linK`) weights
    c.disc_start = 2000  # step from which the GAN terms count (taming's disc_start)
    c.disc_weight = 0.8  # taming's discriminator_weight (multiplies the adaptive weight)
    c.disc_factor = 1.0
    c.adaptive_weight = True  # taming's grad-norm ratio at decoder/conv_out; false: weight = disc_weight
    c.disc_loss = "hinge"  # hinge | vanilla
    c.disc_num_layers = 3
    c.disc_ndf = 64
    c.disc_lr_scale = 1.0  # discriminator lr = train.optimizer.lr * this
    c.use_ema = False  # EMA codebook updates (codebook term dropped from the loss)
    c.ema_decay = 0.99
    c.ema_eps = 1e-5
    c.restart_dead_codes = False
    c.dead_code_threshold = 1e-3  # dead: usage EMA below this fraction of a uniform share (1/n_embed) of tokens
    c.usage_decay = 0.99
    c.restart_every = 100  # steps between restarts
    # Steps of plain-autoencoder warm-up (codebook bypassed); at the last one the codebook is seeded by k-means++
    # on that batch's encoder outputs, so the codes start where the (already informative) encodings are.
    c.quantize_start = 0
    c.finetune_from = ""  # dalle model checkpoint dir (e.g. from `dalle convert vqgan`) to start from
    c.summary_images = 8  # images in the reconstruction grid
    return c


_DISC_LOSSES = ("hinge", "vanilla")


def check_loss(c: ConfigDict, config: ConfigDict):
    for key in ("l1_weight", "l2_weight", "foreground_weight", "codebook_weight", "perceptual_weight", "disc_weight",
                "disc_factor", "disc_lr_scale"):
        if c[key] < 0:
            yield f"vqgan_loss.{key} = {c[key]} must be >= 0"
    if c.l1_weight == 0 and c.l2_weight == 0 and c.perceptual_weight == 0:
        yield "vqgan_loss: l1_weight, l2_weight and perceptual_weight are all 0 (no reconstruction loss)"
    if c.perceptual_weight > 0 and not c.perceptual_net:
        yield "vqgan_loss.perceptual_weight > 0 needs vqgan_loss.perceptual_net (a feature-network .npz file)"
    if c.disc_loss not in _DISC_LOSSES:
        yield f"vqgan_loss.disc_loss = {c.disc_loss!r} is not one of {_DISC_LOSSES}"
    if c.disc_num_layers < 1:
        yield f"vqgan_loss.disc_num_layers = {c.disc_num_layers} must be >= 1"
    if c.disc_ndf <= 0:
        yield f"vqgan_loss.disc_ndf = {c.disc_ndf} must be positive"
    for key in ("ema_decay", "usage_decay"):
        if not 0.0 < c[key] < 1.0:
            yield f"vqgan_loss.{key} = {c[key]} must be in (0, 1)"
    if c.quantize_start < 0:
        yield f"vqgan_loss.quantize_start = {c.quantize_start} must be >= 0"
    if c.restart_every <= 0:
        yield f"vqgan_loss.restart_every = {c.restart_every} must be positive"
    if c.summary_images < 0:
        yield f"vqgan_loss.summary_images = {c.summary_images} must be >= 0"
    model = config.get("model")
    if model is None or model.get("kind") != "vqgan":
        yield "vqgan_loss is set but model.kind is not 'vqgan'"
    data = config.get("data")
    if model is not None and data is not None and model.get("ch_mult"):
        factor = 2 ** (len(model.ch_mult) - 1)
        if data.get("image_size", 0) % factor:
            yield (f"data.image_size = {data.image_size} is not divisible by the VQGAN downsampling factor {factor}")
    train = config.get("train")
    if train is not None and train.get("grad_accum_steps", 1) != 1:
        yield (f"train.grad_accum_steps = {train.grad_accum_steps}: the VQGAN task steps generator and "
               "discriminator on whole batches; use 1")


config_lib.register_schema("vqgan_loss", loss_defaults, check_loss)
