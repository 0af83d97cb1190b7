"""The dVAE objective of "Zero-Shot Text-to-Image Generation" (Ramesh et al. 2021, section 2.1 and appendix A):

  z ~ GumbelSoftmax(encoder logits, tau)        the relaxation of the categorical posterior q(z | x)
  nll = -log LogitLaplace(map_pixels(x); decoder(z))
  kl  = KL(q(. | x) || uniform over the vocab) per code position
  loss = (sum nll + beta * sum kl) / number of pixel values      the negative ELB per pixel value

with tau annealed down and beta raised over training (`schedule`). All pure functions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def schedule(step: jax.Array, start: float, end: float, steps: int, shape: str = "cosine") -> jax.Array:
    """`start` at step 0 to `end` at step `steps` and after, along a half cosine (flat at both ends) or a line."""
    if steps <= 0:
        return jnp.asarray(end, jnp.float32)
    t = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
    if shape == "cosine":
        t = 0.5 * (1.0 - jnp.cos(math.pi * t))
    elif shape != "linear":
        raise ValueError(f"schedule shape {shape!r} is not one of ('cosine', 'linear')")
    return start + (end - start) * t


def gumbel_softmax(rng: jax.Array, logits: jax.Array, temperature: jax.Array | float) -> jax.Array:
    """softmax((logits + Gumbel noise) / tau) over the last axis, in float32: the relaxed one-hot codes the
    decoder reads while training."""
    g = jax.random.gumbel(rng, logits.shape, jnp.float32)
    return jax.nn.softmax((logits.astype(jnp.float32) + g) / temperature, axis=-1)


def straight_through(z: jax.Array) -> jax.Array:
    """The one-hot of each relaxed sample's argmax in the forward pass, with the relaxed sample's gradient in the
    backward pass (straight-through Gumbel-softmax, Jang et al. 2017): the decoder reads only the code identity,
    never the soft mixture that the argmax tokenizer cannot reproduce."""
    hard = jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)
    return hard + (z - jax.lax.stop_gradient(z))  # z - z = 0 exactly: the forward pass is exactly one-hot


def kl_to_uniform(logits: jax.Array) -> jax.Array:
    """KL(softmax(logits) || uniform) = log K - H(q) in nats, per position ([...]: the logits' leading axes)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(logp) * logp, axis=-1) + math.log(logits.shape[-1])


def logit_laplace_nll(x: jax.Array, stats: jax.Array) -> jax.Array:
    """-log density of the logit-Laplace distribution at x in (0, 1), per pixel value:

        p(x | mu, b) = exp(-|logit(x) - mu| / b) / (2 b x (1 - x))

    `x` [B, H, W, C] are mapped pixels (map_pixels keeps them in [eps, 1 - eps], off the density's singular
    ends); `stats` [B, H, W, 2C] hold mu then log b."""
    c = x.shape[-1]
    if stats.shape[-1] != 2 * c:
        raise ValueError(f"decoder statistics have {stats.shape[-1]} channels; images with {c} need {2 * c}")
    x = x.astype(jnp.float32)
    mu, log_b = stats[..., :c].astype(jnp.float32), stats[..., c:].astype(jnp.float32)
    logit = jnp.log(x) - jnp.log1p(-x)
    return jnp.abs(logit - mu) * jnp.exp(-log_b) + log_b + math.log(2.0) + jnp.log(x) + jnp.log1p(-x)


def gaussian_nll(x: jax.Array, stats: jax.Array, sigma: float) -> jax.Array:
    """-log N(x; sigmoid(mu), sigma ** 2) per pixel value, up to its constant: (x - sigmoid(mu)) ** 2 / (2 sigma ** 2)
    with x mapped pixels and mu the decoder's locations (its log-scales unused): a squared error in the space the
    decoded image lives in (`stats_to_images` unmaps sigmoid(mu))."""
    c = x.shape[-1]
    mean = jax.nn.sigmoid(stats[..., :c].astype(jnp.float32))
    return jnp.square(x.astype(jnp.float32) - mean) / (2.0 * sigma ** 2)


RECONSTRUCTIONS = ("logit_laplace", "mse")


def reconstruction_nll(x: jax.Array, stats: jax.Array, reconstruction: str = "logit_laplace",
                       mse_sigma: float = 0.1) -> jax.Array:
    """The reconstruction term per pixel value: `logit_laplace_nll`, or `gaussian_nll` at std `mse_sigma`."""
    if reconstruction == "logit_laplace":
        return logit_laplace_nll(x, stats)
    if reconstruction == "mse":
        return gaussian_nll(x, stats, mse_sigma)
    raise ValueError(f"reconstruction {reconstruction!r} is not one of {RECONSTRUCTIONS}")


def negative_elb(x: jax.Array, stats: jax.Array, logits: jax.Array, kl_weight: jax.Array | float,
                 pixel_weights: jax.Array | None = None, reconstruction: str = "logit_laplace",
                 mse_sigma: float = 0.1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss, nll, kl): the beta-weighted negative ELB divided by the number of pixel values, the mean NLL per
    pixel value, and the mean KL per code position (both in nats).

    `pixel_weights` (broadcastable to x, e.g. [B, H, W, 1]) reweigh the NLL term pixel by pixel, normalized by
    their mean so the term keeps its scale next to the KL; the returned `nll` stays the unweighted mean.
    `reconstruction` "mse" replaces the logit-Laplace NLL with `gaussian_nll` at std `mse_sigma`."""
    nll = reconstruction_nll(x, stats, reconstruction, mse_sigma)
    kl = kl_to_uniform(logits)
    if pixel_weights is None:
        rec = jnp.sum(nll)
    else:
        w = jnp.broadcast_to(pixel_weights.astype(jnp.float32), nll.shape)
        rec = jnp.sum(nll * w) / jnp.mean(w)
    loss = (rec + kl_weight * jnp.sum(kl)) / nll.size
    return loss, jnp.mean(nll), jnp.mean(kl)
