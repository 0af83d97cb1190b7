"""VQGAN training losses, as taming's VQLPIPSWithDiscriminator computes them.

  generator:      nll + d_weight * disc_factor * (-mean D(recon)) + codebook_weight * quantizer loss
  discriminator:  disc_factor * hinge(D(x), D(recon))
  nll = mean(l1 * |x - recon| + l2 * (x - recon)^2 + perceptual_weight * LPIPS(x, recon))
  d_weight = disc_weight * clip(|grad_w nll| / (|grad_w g_loss| + 1e-4), 0, 1e4), w = decoder/conv_out kernel
  disc_factor = 0 before `disc_start`.

Images are in [-1, 1] throughout. The PatchGAN discriminator normalizes with batch statistics (BatchNorm in
training mode, taming's setting while it trains); it keeps no running averages since only training uses it.
"""

from __future__ import annotations

import re
from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# Scalar pieces
# ----------------------------------------------------------------------------------------------------------------
def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def vanilla_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))


D_LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {"hinge": hinge_d_loss,
                                                                    "vanilla": vanilla_d_loss}


def adopt_weight(weight: float, step: jax.Array, threshold: int, value: float = 0.0) -> jax.Array:
    """`weight` from step `threshold` on, `value` before (taming's adopt_weight)."""
    return jnp.where(step < threshold, value, weight)


def adaptive_weight(nll_grad: jax.Array, g_grad: jax.Array, disc_weight: float) -> jax.Array:
    """taming's calculate_adaptive_weight from the two gradients at the last decoder layer."""
    w = jnp.linalg.norm(nll_grad.ravel()) / (jnp.linalg.norm(g_grad.ravel()) + 1e-4)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, 1e4) * disc_weight)


def pixel_loss(x: jax.Array, recon: jax.Array, l1_weight: float, l2_weight: float) -> jax.Array:
    """Per-pixel reconstruction term (not yet averaged)."""
    d = x.astype(jnp.float32) - recon.astype(jnp.float32)
    out = l1_weight * jnp.abs(d) if l1_weight else jnp.zeros_like(d)
    if l2_weight:
        out = out + l2_weight * jnp.square(d)
    return out


def foreground_weights(x: jax.Array, foreground_weight: float, scale: float = 0.5) -> jax.Array:
    """Per-pixel weights [B, H, W, 1] of images x in [-1, 1]: 1 on the background (each image's per-channel median
    colour), rising linearly with the distance from it to 1 + foreground_weight at distance >= `scale`."""
    x = x.astype(jnp.float32)
    background = jnp.median(x.reshape(x.shape[0], -1, x.shape[-1]), axis=1)[:, None, None, :]
    distance = jnp.linalg.norm(x - background, axis=-1, keepdims=True)
    return 1.0 + foreground_weight * jnp.clip(distance / scale, 0.0, 1.0)


def psnr(x: jax.Array, recon: jax.Array) -> jax.Array:
    """Mean per-image PSNR in dB of images in [-1, 1], measured in [0, 1] after clipping the reconstruction."""
    a = (x.astype(jnp.float32) + 1) / 2
    b = jnp.clip((recon.astype(jnp.float32) + 1) / 2, 0.0, 1.0)
    mse = jnp.mean(jnp.square(a - b), axis=tuple(range(1, a.ndim)))
    return jnp.mean(10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10)))


def code_stats(codes: jax.Array, n_embed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(counts per code [K], fraction of codes used, perplexity = exp(entropy of the code histogram))."""
    counts = jnp.zeros((n_embed,), jnp.float32).at[codes.reshape(-1)].add(1.0)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    perplexity = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
    return counts, jnp.mean((counts > 0).astype(jnp.float32)), perplexity


def kmeans_plus_plus(points: jax.Array, k: int, rng: jax.Array) -> jax.Array:
    """k seeds [k, D] from points [N, D] by k-means++: each next seed drawn with probability proportional to its
    squared distance from the seeds so far. Rare but distinct vectors (a coloured patch among mostly-black ones)
    get codes of their own, where uniform draws would spend the codebook on the background."""
    points = points.astype(jnp.float32)
    keys = jax.random.split(rng, k)
    first = points[jax.random.randint(keys[0], (), 0, points.shape[0])]
    d2 = jnp.sum(jnp.square(points - first), axis=-1)
    seeds = jnp.zeros((k, points.shape[1]), jnp.float32).at[0].set(first)

    def body(i, carry):
        seeds, d2 = carry
        # All remaining mass on exact duplicates of seeds (d2 = 0 everywhere): fall back to a uniform draw.
        logits = jnp.where(jnp.sum(d2) > 0, jnp.log(jnp.maximum(d2, 1e-30)), 0.0)
        pick = points[jax.random.categorical(keys[i], logits)]
        return seeds.at[i].set(pick), jnp.minimum(d2, jnp.sum(jnp.square(points - pick), axis=-1))

    seeds, _ = jax.lax.fori_loop(1, k, body, (seeds, d2))
    return seeds


# ----------------------------------------------------------------------------------------------------------------
# PatchGAN discriminator (taming's NLayerDiscriminator)
# ----------------------------------------------------------------------------------------------------------------
class BatchNorm(hk.Module):
    """BatchNorm2d in training mode (batch statistics, biased variance, eps 1e-5), affine, no running stats."""

    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = hk.get_parameter("scale", (c,), init=hk.initializers.RandomNormal(0.02, 1.0))
        offset = hk.get_parameter("offset", (c,), init=jnp.zeros)
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=(0, 1, 2))
        var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
        return ((xf - mean) * jax.lax.rsqrt(var + 1e-5) * scale + offset).astype(x.dtype)


class _PatchConv(hk.Module):
    """4x4 conv, padding 1, N(0, 0.02) init (taming's weights_init); bias optional (none before a BatchNorm)."""

    def __init__(self, out: int, stride: int, bias: bool, name: str):
        super().__init__(name=name)
        self.out, self.stride, self.bias = out, stride, bias

    def __call__(self, x: jax.Array) -> jax.Array:
        from dalle.modeling.vqgan.model import conv2d

        w = hk.get_parameter("w", (4, 4, x.shape[-1], self.out), init=hk.initializers.RandomNormal(0.02))
        b = hk.get_parameter("b", (self.out,), init=jnp.zeros) if self.bias else None
        return conv2d(x, w, b, self.stride, ((1, 1), (1, 1)))


class Discriminator(hk.Module):
    """conv4x4/2 + LeakyReLU(0.2), then `n_layers - 1` x (conv4x4/2 + BN + LReLU) with channels doubling up to
    8 x ndf, one conv4x4/1 + BN + LReLU, and a conv4x4/1 to one logit per patch. Convs init N(0, 0.02)."""

    def __init__(self, ndf: int = 64, n_layers: int = 3, name: str | None = "discriminator"):
        super().__init__(name=name)
        self.ndf, self.n_layers = ndf, n_layers

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.leaky_relu(_PatchConv(self.ndf, 2, True, name="conv_0")(x), 0.2)
        mult = 1
        for n in range(1, self.n_layers + 1):
            mult = min(2 ** n, 8)
            stride = 2 if n < self.n_layers else 1
            h = _PatchConv(self.ndf * mult, stride, False, name=f"conv_{n}")(h)
            h = jax.nn.leaky_relu(BatchNorm(name=f"norm_{n}")(h), 0.2)
        return _PatchConv(1, 1, True, name=f"conv_{self.n_layers + 1}")(h).astype(jnp.float32)


def make_discriminator(ndf: int, n_layers: int) -> hk.Transformed:
    """init(rng, images) / apply(params, images); init draws all weights in one call (fast to compile)."""
    t = hk.without_apply_rng(hk.transform(lambda x: Discriminator(ndf, n_layers)(x)))

    def init(rng: jax.Array, x: jax.Array):
        from dalle.modeling.vqgan.model import init_from_rules

        abstract = jax.eval_shape(t.init, rng, x)

        def rule(module, name, shape, siblings):
            if name == "w":
                return ("normal", 0.0, 0.02)
            if name == "scale":
                return ("normal", 1.0, 0.02)
            return ("const", 0.0, 0.0)

        return init_from_rules(rng, abstract, rule)

    return hk.Transformed(init, t.apply)


# ----------------------------------------------------------------------------------------------------------------
# Perceptual loss (LPIPS-style) with a feature network read from a file
# ----------------------------------------------------------------------------------------------------------------
_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def load_perceptual_net(path: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """LPIPS distance per image from an .npz of torchvision-VGG-style `features.N.weight/.bias` (torch OIHW)
    and optional LPIPS heads `linK` ([1, C, 1, 1] or [C]); without heads channels are summed uniformly.

    Stages are read off the layer indices: a gap of 3 between convs means ReLU + MaxPool, so a stage ends there;
    the distance taps the ReLU output at the end of each stage (relu1_2, relu2_2, ... for VGG16)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    convs = sorted({int(m.group(1)) for k in arrays for m in [re.match(r"features\.(\d+)\.weight$", k)] if m})
    if not convs:
        raise ValueError(f"{path}: no features.N.weight arrays (expected a VGG-style feature network)")
    layers = []  # (w HWIO, b, pool_before)
    for i, idx in enumerate(convs):
        b_key = f"features.{idx}.bias"
        if b_key not in arrays:
            raise ValueError(f"{path}: features.{idx}.weight has no {b_key}")
        pool_before = i > 0 and idx - convs[i - 1] >= 3
        layers.append((jnp.asarray(arrays[f"features.{idx}.weight"].transpose(2, 3, 1, 0)),
                       jnp.asarray(arrays[b_key]), pool_before))
    taps = [i for i in range(len(layers)) if i == len(layers) - 1 or layers[i + 1][2]]
    heads = []
    for k in range(len(taps)):
        key = next((c for c in (f"lin{k}.model.1.weight", f"lin{k}") if c in arrays), None)
        heads.append(None if key is None else jnp.asarray(arrays[key]).reshape(-1))
    from dalle.modeling.vqgan.model import conv2d

    def features(x):
        h = (x - _LPIPS_SHIFT) / _LPIPS_SCALE
        out = []
        for i, (w, b, pool) in enumerate(layers):
            if pool:
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            h = jax.nn.relu(conv2d(h, w, b, 1, ((1, 1), (1, 1))))
            if i in taps:
                out.append(h)
        return out

    def distance(x: jax.Array, y: jax.Array) -> jax.Array:
        total = 0.0
        for fx, fy, head in zip(features(x.astype(jnp.float32)), features(y.astype(jnp.float32)), heads):
            nx = fx / (jnp.sqrt(jnp.sum(fx * fx, axis=-1, keepdims=True)) + 1e-10)
            ny = fy / (jnp.sqrt(jnp.sum(fy * fy, axis=-1, keepdims=True)) + 1e-10)
            d = jnp.square(nx - ny)
            d = jnp.sum(d * head, axis=-1) if head is not None else jnp.sum(d, axis=-1)
            total = total + jnp.mean(d, axis=(1, 2))
        return total

    return distance

