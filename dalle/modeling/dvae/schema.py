"""Schemas of the dVAE config sections (see dalle/config.py): `model` with kind "dvae", and `dvae_loss`.

The `model` defaults are the published dVAE of "Zero-Shot Text-to-Image Generation" (Ramesh et al. 2021), as the
`dall-e` package builds it (`dall_e/encoder.py`, `dall_e/decoder.py`): 256 px images, 32x32 codes, 8192 codes.
Kept free of jax imports: configs are validated before any work starts.
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib


def model_defaults() -> ConfigDict:
    """The published dVAE. `group_count` is 4 in `dall-e` (a class constant there); fewer groups make a smaller
    downsampling factor (2 ** (group_count - 1)) for tiny images."""
    c = ConfigDict()
    c.kind = "dvae"
    c.resolution = 256  # nominal image side (the convolutions work at any multiple of the factor)
    c.input_channels = 3
    c.output_channels = 3  # the decoder predicts 2x this: logit-Laplace locations, then log-scales
    c.n_hid = 256  # width of the first encoder group and the last decoder group; groups double/halve it
    c.n_blk_per_group = 2
    c.n_init = 128  # decoder: channels of the 1x1 conv applied to the (relaxed) one-hot codes
    c.vocab_size = 8192
    c.group_count = 4
    return c


def check_model(m: ConfigDict, _: ConfigDict):
    for key in ("resolution", "input_channels", "output_channels", "n_hid", "n_blk_per_group", "n_init",
                "group_count"):
        if m[key] <= 0:
            yield f"model.{key} = {m[key]} must be positive"
    if m.vocab_size < 2:
        yield f"model.vocab_size = {m.vocab_size} must be at least 2"
    if m.n_hid > 0 and m.n_hid % 4:
        # Each residual block's inner width is a quarter of its output width (`dall_e`'s n_out % 4 == 0).
        yield f"model.n_hid = {m.n_hid} must be a multiple of 4"
    if m.group_count > 0 and m.resolution > 0:
        factor = 2 ** (m.group_count - 1)
        if m.resolution % factor:
            yield (f"model.resolution = {m.resolution} is not divisible by the downsampling factor {factor} "
                   f"(2 ** (model.group_count - 1))")


SCHEDULE_SHAPES = ("cosine", "linear")
RECONSTRUCTIONS = ("logit_laplace", "mse")  # = dalle.modeling.dvae.losses.RECONSTRUCTIONS (no jax import here)


def loss_defaults() -> ConfigDict:
    """The dVAE objective and its schedules. Defaults are the paper's (appendix A.2): tau annealed from 1 to 1/16
    over the first 150,000 updates, the KL weight raised from 0 to 6.6 over the first 5000."""
    c = ConfigDict()
    c.temperature_start = 1.0
    c.temperature_end = 1.0 / 16.0
    c.temperature_steps = 150_000
    c.temperature_shape = "cosine"  # cosine | linear (the paper found linear annealing of tau often diverged)
    c.kl_weight_start = 0.0
    c.kl_weight_end = 6.6
    c.kl_weight_steps = 5000
    c.kl_weight_shape = "cosine"
    # The loss is the negative ELB per pixel value: (sum of logit-Laplace NLLs + beta * sum of KLs) divided by
    # the number of pixel values, so beta means what it means in the paper at any image size. The paper's ratio
    # is 192 pixel values per code (256 px, 32x32 codes); on a grid with fewer pixel values per code the same
    # beta weighs the KL term more, which a preset compensates for in kl_weight_end.
    c.summary_images = 8  # images in the reconstruction grid
    # Options against codebook collapse on small, mostly-background images (issue 20); the defaults are the
    # paper's recipe. configs/dvae_shapes.py sets the ones that work there.
    # The decoder reads the one-hot of each relaxed sample's argmax, with the relaxed sample's gradient
    # (straight-through Gumbel-softmax); off, it reads the relaxed sample itself, as in the paper.
    c.straight_through = False
    # The NLL term: logit_laplace (the paper's), or mse: a Gaussian of std mse_sigma (in mapped-pixel units,
    # [0.1, 0.9] for [0, 1]) around the decoded image, i.e. a squared error whose scale sets its balance with the
    # KL. On flat backgrounds the logit-Laplace scales shrink there without bound and the decoder is slow to draw
    # the few object pixels.
    c.reconstruction = "logit_laplace"
    c.mse_sigma = 0.1
    # > 0: pixels that stand out from the image's background weigh up to 1 + foreground_weight in the NLL term
    # (the VQGAN task's `foreground_weight`, dalle.modeling.vqgan.losses.foreground_weights).
    c.foreground_weight = 0.0
    # After the first step, set the encoder's output conv so each position takes its nearest of vocab_size
    # k-means++ seeds drawn from that batch's encoder features (logit gaps: kmeans_logit_scale over the
    # features' variance), as the VQGAN task seeds its codebook: the codes mean something from the start.
    c.kmeans_init = False
    c.kmeans_logit_scale = 10.0
    # Steps during which only the decoder trains (encoder updates zeroed): the decoder learns the initial
    # codes before the encoder's gradients, which at first chase the image-wide error, can merge them.
    c.encoder_freeze_steps = 0
    # Dead-code restarts: every `restart_every` steps, each code whose usage EMA (its share of the argmax codes
    # of training batches, decay usage_decay) is below dead_code_threshold / vocab_size splits a live code: the
    # one at a position drawn in proportion to its reconstruction error. It takes that code's decoder input row
    # (plus restart_noise times the rows' std of noise) and an encoder output column and bias that win by
    # about restart_margin logits at the drawn position's features (DVAETask.restart_dead_codes).
    c.restart_dead_codes = False
    c.dead_code_threshold = 0.03
    c.usage_decay = 0.99
    c.restart_every = 100
    c.restart_noise = 0.1
    c.restart_margin = 1.0
    # Restarts stop at this step (0: never): a restarted code takes positions far from the one it was drawn at
    # until the encoder and decoder adapt, so a run needs steps without restarts before its weights are exported.
    c.restart_until = 0
    return c


def check_loss(c: ConfigDict, config: ConfigDict):
    positive = ("temperature_start", "temperature_end", "mse_sigma", "kmeans_logit_scale", "restart_every",
                "restart_margin")
    non_negative = ("kl_weight_start", "kl_weight_end", "foreground_weight", "dead_code_threshold", "restart_noise",
                    "temperature_steps", "kl_weight_steps", "summary_images",
                    "encoder_freeze_steps", "restart_until")
    yield from (f"dvae_loss.{k} = {c[k]} must be positive" for k in positive if c[k] <= 0)
    yield from (f"dvae_loss.{k} = {c[k]} must be >= 0" for k in non_negative if c[k] < 0)
    if not 0 <= c.usage_decay < 1:
        yield f"dvae_loss.usage_decay = {c.usage_decay} must be in [0, 1)"
    if c.reconstruction not in RECONSTRUCTIONS:
        yield f"dvae_loss.reconstruction = {c.reconstruction!r} is not one of {RECONSTRUCTIONS}"
    if c.restart_dead_codes and 0 < c.restart_every and 0 < c.restart_until <= c.restart_every:
        yield (f"dvae_loss.restart_until = {c.restart_until} leaves no restart (the first is at restart_every = "
               f"{c.restart_every}); 0 restarts all run long")
    for key in ("temperature_shape", "kl_weight_shape"):
        if c[key] not in SCHEDULE_SHAPES:
            yield f"dvae_loss.{key} = {c[key]!r} is not one of {SCHEDULE_SHAPES}"
    model = config.get("model")
    if model is None or model.get("kind") != "dvae":
        yield "dvae_loss is set but model.kind is not 'dvae'"
        return
    data = config.get("data")
    factor = 2 ** (model.group_count - 1) if model.group_count > 0 else 1
    if data is not None and data.get("image_size", 0) % factor:
        yield f"data.image_size = {data.image_size} is not divisible by the dVAE downsampling factor {factor}"
    train = config.get("train")
    if train is not None and train.get("grad_accum_steps", 1) != 1:
        yield f"train.grad_accum_steps = {train.grad_accum_steps}: the dVAE task steps on whole batches; use 1"


config_lib.register_schema("dvae_loss", loss_defaults, check_loss)
