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


def negative_elb(x: jax.Array, stats: jax.Array, logits: jax.Array, kl_weight: jax.Array | float
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss, nll, kl): the beta-weighted negative ELB divided by the number of pixel values, the mean NLL per
    pixel value, and the mean KL per code position (both in nats)."""
    nll = logit_laplace_nll(x, stats)
    kl = kl_to_uniform(logits)
    loss = (jnp.sum(nll) + kl_weight * jnp.sum(kl)) / nll.size
    return loss, jnp.mean(nll), jnp.mean(kl)
