"""Losses of the text-conditional GAN: pure functions of logits, features and embeddings.

- Hinge losses (Lim & Ye 2017; Miyato et al. 2018), the discriminator's with the matching-aware term of Reed et al.
  2016 ("Generative Adversarial Text to Image Synthesis", GAN-CLS): a real image with another image's caption is a
  negative too, so the discriminator must judge the pair, not only the picture.
- The projection logit of Miyato & Koyama 2018 ("cGANs with Projection Discriminator"), with the class embedding
  replaced by a linear map of the sentence embedding.
- R1 (Mescheder et al. 2018) on real pairs.
- XMC-GAN's contrastive terms (Zhang et al. 2021, "Cross-Modal Contrastive Learning for Text-to-Image
  Generation"): InfoNCE between image features and sentences, and between fake and real images of one caption.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def hinge_real(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """E[max(0, 1 - D)]: pushes positives above +1 (optionally a weighted mean over rows)."""
    return _mean(jax.nn.relu(1.0 - logits), weights)


def hinge_fake(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """E[max(0, 1 + D)]: pushes negatives below -1."""
    return _mean(jax.nn.relu(1.0 + logits), weights)


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(x)
    w = weights.astype(x.dtype)
    return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def matching_aware_d_loss(real: jax.Array, fake: jax.Array, mismatched: jax.Array, mismatch_weight: float,
                          mismatch_valid: jax.Array | None = None) -> jax.Array:
    """Reed et al.'s GAN-CLS objective in hinge form: real pairs are positives; fakes (weight 1 - w) and real
    images with a wrong caption (weight w) are negatives. w = 0 is the plain conditional hinge loss.
    `mismatch_valid`: rows that have a different caption to pair with (see `mismatch_index`)."""
    w = mismatch_weight
    return hinge_real(real) + (1.0 - w) * hinge_fake(fake) + w * hinge_fake(mismatched, mismatch_valid)


def generator_hinge_loss(fake: jax.Array) -> jax.Array:
    """-E[D(G(z, s), s)]: the generator raises the discriminator's score of its pairs."""
    return -jnp.mean(fake)


def projection_logits(unconditional: jax.Array, features: jax.Array, projected_text: jax.Array) -> jax.Array:
    """D(x, s) = psi(phi(x)) + <V s, phi(x)> (Miyato & Koyama 2018): `unconditional` is psi(phi(x)) [B],
    `features` phi(x) [B, F], `projected_text` V s [B, F]. Aligned features and text raise the logit."""
    return unconditional + jnp.sum(features * projected_text, axis=-1)


def mismatch_index(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For each row, the nearest following row (cyclically) whose caption differs: the wrong caption of the
    matching-aware term. A plain roll would pair duplicate captions (frequent in a small world) and teach the
    discriminator that a right pair is wrong. Returns (index [B] int32, valid [B] bool: a different caption exists)."""
    b = tokens.shape[0]
    if b == 1:
        return jnp.zeros((1,), jnp.int32), jnp.zeros((1,), bool)
    same = jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)  # [B, B]
    offsets = jnp.arange(1, b)
    candidates = (jnp.arange(b)[:, None] + offsets[None, :]) % b  # [B, B - 1]
    differs = ~jnp.take_along_axis(same, candidates, axis=1)
    first = jnp.argmax(differs, axis=1)  # 0 when none differs: then the next row, marked invalid
    index = jnp.take_along_axis(candidates, first[:, None], axis=1)[:, 0]
    return index.astype(jnp.int32), jnp.any(differs, axis=1)


def r1_penalty(input_grads: jax.Array) -> jax.Array:
    """E over the batch of |grad_x D(x)|^2 (multiply by gamma / 2): keeps D flat on the data (Mescheder et al.)."""
    return jnp.mean(jnp.sum(jnp.square(input_grads.astype(jnp.float32)).reshape(input_grads.shape[0], -1), axis=-1))


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), eps * eps))


def info_nce(a: jax.Array, b: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """Symmetric InfoNCE of paired rows (row i of `a` with row i of `b`; every other row a negative) over cosine
    similarities / temperature, as XMC-GAN's image-sentence and image-image terms. Returns (loss, accuracy of
    picking the right partner, a -> b)."""
    logits = l2_normalize(a.astype(jnp.float32)) @ l2_normalize(b.astype(jnp.float32)).T / temperature
    labels = jnp.arange(logits.shape[0])
    la = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
    lb = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
    acc = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    return 0.5 * (la + lb), acc


def accuracies(real: jax.Array, fake: jax.Array, mismatched: jax.Array,
               mismatch_valid: jax.Array | None = None) -> dict[str, jax.Array]:
    """How often the discriminator is right: real pairs scored > 0, fakes and wrong captions < 0."""
    return {"acc_real": jnp.mean((real > 0).astype(jnp.float32)),
            "acc_fake": jnp.mean((fake < 0).astype(jnp.float32)),
            "acc_mismatch": _mean((mismatched < 0).astype(jnp.float32), mismatch_valid)}
