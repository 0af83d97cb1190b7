"""CLIP reranking: generate N candidates per prompt, score each against its prompt with CLIP, keep the best k.

What dalle-mini does with ViT-B/32 `logits_per_image` and DALL·E did with 512 -> 32. The order by
`logit_scale * cos` equals the order by cos, so the scores returned are CLIP scores (max(100 cos, 0) is not
used for ordering: the clamp would tie every negative candidate). Used by `dalle generate`, the web demo and the
eval job.

    kept, scores, order = rerank_images(clip, images, prompts, keep=2)   # images prompt-major [P * N, H, W, 3]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def rerank_order(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the `keep` best candidates per prompt, best first: scores [P, N] -> int [P, keep].
    Ties keep the earlier candidate first (stable), so results do not depend on sort internals."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be [prompts, candidates], got shape {s.shape}")
    if not 1 <= keep <= s.shape[1]:
        raise ValueError(f"keep = {keep} must be in [1, {s.shape[1]}] (the number of candidates)")
    return np.argsort(-s, axis=1, kind="stable")[:, :keep]


def candidate_scores(clip: Any, images: Any, prompts: Sequence[str]) -> np.ndarray:
    """100 * cos(candidate, its prompt): images prompt-major [P * N, H, W, 3] -> float64 [P, N]."""
    images = np.asarray(images)
    p = len(prompts)
    if p == 0 or len(images) % p:
        raise ValueError(f"{len(images)} images is not a multiple of {p} prompts (prompt-major rows expected)")
    n = len(images) // p
    img = clip.embed_images(images).astype(np.float64)
    txt = clip.embed_texts(list(prompts)).astype(np.float64)
    img /= np.maximum(np.linalg.norm(img, axis=-1, keepdims=True), 1e-12)
    txt /= np.maximum(np.linalg.norm(txt, axis=-1, keepdims=True), 1e-12)
    return 100.0 * np.einsum("pnd,pd->pn", img.reshape(p, n, -1), txt)


def rerank_images(clip: Any, images: Any, prompts: Sequence[str], keep: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept images [P, keep, H, W, 3], their scores [P, keep], order [P, keep] into each prompt's candidates)."""
    images = np.asarray(images)
    scores = candidate_scores(clip, images, prompts)
    order = rerank_order(scores, keep)
    p, n = scores.shape
    grouped = images.reshape(p, n, *images.shape[1:])
    kept = np.take_along_axis(grouped, order.reshape(p, keep, *([1] * (images.ndim - 1))), axis=1)
    return kept, np.take_along_axis(scores, order, axis=1), order
