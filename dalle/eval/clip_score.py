"""CLIP score (Hessel et al.; torchmetrics' definition): mean over pairs of max(100 * cos(image, text), 0).

Why the backbone travels with the number: CLIP scores from different CLIPs are not comparable (Hessel et al. 2021,
"CLIPScore", fix one backbone), so every result dict carries `backbone`, and the eval job writes it next to the score.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def pairwise_scores(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """max(100 * cos, 0) for row-aligned pairs: image i with text i -> float64 [N]. Embeddings need not be
    normalized (they are normalized here)."""
    a, b = np.asarray(image_emb, np.float64), np.asarray(text_emb, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"image and text embeddings must both be [N, D], got {a.shape} and {b.shape}")
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return np.maximum(100.0 * np.sum(a * b, axis=-1), 0.0)


def summarize(scores: np.ndarray, backbone: str) -> dict[str, Any]:
    """{"clip_score": mean, "clip_score_std", "count", "backbone"}; an empty set says so instead of a number."""
    s = np.asarray(scores, np.float64)
    if s.size == 0:
        return {"clip_score": None, "count": 0, "backbone": backbone, "note": "no images to score"}
    return {"clip_score": float(s.mean()), "clip_score_std": float(s.std()), "count": int(s.size),
            "backbone": backbone}


def clip_score(clip: Any, images: Any, captions: Sequence[str]) -> dict[str, Any]:
    """CLIP score of images [N, H, W, 3] (uint8 or [0, 1] float) against their captions, with a loaded CLIP
    (`dalle.modeling.clip.model.load_clip`)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(captions) == 0:
        return summarize(np.zeros(0), clip.backbone)
    return summarize(pairwise_scores(clip.embed_images(images), clip.embed_texts(captions)), clip.backbone)
