"""CLIP score = mean of max(100 cos, 0), on hand-made embeddings, and the backbone travels with the number."""

from __future__ import annotations

import numpy as np
import pytest

from dalle.eval import clip_score


def test_hand_made_pairs():
    img = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, 0.0]])
    txt = np.array([[3.0, 0.0], [0.0, -1.0], [1.0, 0.0], [0.0, 5.0]])
    # cos: 1, -1 (clamped to 0), 1/sqrt(2), 0
    got = clip_score.pairwise_scores(img, txt)
    np.testing.assert_allclose(got, [100.0, 0.0, 100 / np.sqrt(2), 0.0], atol=1e-12)
    s = clip_score.summarize(got, "ViT-test")
    assert s["clip_score"] == pytest.approx((100 + 100 / np.sqrt(2)) / 4)
    assert s["backbone"] == "ViT-test" and s["count"] == 4


def test_empty_set_says_so():
    s = clip_score.summarize(np.zeros(0), "X")
    assert s["clip_score"] is None and s["note"]


class _FakeCLIP:
    backbone = "fake"

    def embed_images(self, images):
        return np.asarray(images, np.float64).reshape(len(images), -1)[:, :2]

    def embed_texts(self, captions):
        return np.array([[1.0, 0.0] if c == "x" else [0.0, 1.0] for c in captions])


def test_clip_score_with_a_loaded_clip():
    images = np.zeros((2, 1, 2, 3), np.float64)
    images[0, 0, 0, 0] = 1.0  # embeds to (1, 0)
    images[1, 0, 0, 1] = 1.0  # embeds to (0, 1)
    assert clip_score.clip_score(_FakeCLIP(), images, ["x", "x"])["clip_score"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        clip_score.clip_score(_FakeCLIP(), images, ["x"])
