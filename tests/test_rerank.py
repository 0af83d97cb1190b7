"""Reranking keeps the CLIP-best candidates per prompt, best first, with stable ties."""

from __future__ import annotations

import numpy as np
import pytest

from dalle.eval import rerank


def test_order_best_first_with_stable_ties():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, -1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(rerank.rerank_order(scores, 3), [[1, 3, 2], [0, 2, 3]])
    with pytest.raises(ValueError, match="keep = 5"):
        rerank.rerank_order(scores, 5)


class _AxisCLIP:
    """Image embedding = its mean color; prompt 'red' -> (1,0,0), 'green' -> (0,1,0)."""

    backbone = "axis"

    def embed_images(self, images):
        return np.asarray(images, np.float64).mean(axis=(1, 2)) + 1e-3

    def embed_texts(self, captions):
        return np.array([[1.0, 0, 0] if c == "red" else [0, 1.0, 0] for c in captions])


def test_rerank_images_keeps_matching_candidates():
    n = 3
    colors = {"red": 0, "green": 1}
    images = np.zeros((2 * n, 4, 4, 3), np.uint8)
    # prompt 0 (red): candidates green, red-ish, red; prompt 1 (green): red, green, dark green
    images[0, ..., 1] = 200
    images[1, ..., 0] = 120
    images[1, ..., 2] = 100
    images[2, ..., 0] = 250
    images[3, ..., 0] = 250
    images[4, ..., 1] = 250
    images[5, ..., 1] = 60
    images[5, ..., 2] = 60
    kept, scores, order = rerank.rerank_images(_AxisCLIP(), images, ["red", "green"], keep=2)
    np.testing.assert_array_equal(order, [[2, 1], [1, 2]])  # indices within each prompt's candidates
    assert kept.shape == (2, 2, 4, 4, 3)
    np.testing.assert_array_equal(kept[0, 0], images[2])
    np.testing.assert_array_equal(kept[1, 1], images[5])
    assert np.all(np.diff(scores, axis=1) <= 0) and scores[0, 0] == pytest.approx(100.0, abs=0.1)
    assert colors  # (readability)


def test_rerank_needs_prompt_major_rows():
    with pytest.raises(ValueError, match="multiple of 2 prompts"):
        rerank.candidate_scores(_AxisCLIP(), np.zeros((3, 2, 2, 3)), ["red", "green"])
