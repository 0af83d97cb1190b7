"""R-precision (Xu et al. 2018, AttnGAN; Zhang et al. 2021, XMC-GAN): does an image pick out its own caption?

For each image, its true caption is ranked among R = 100 captions (the true one + 99 captions of *other* items,
e.g. other emoji) by the cosine similarity of a CLIP trained on the training split; R@1 is the fraction of images
whose true caption ranks first. Chance is 1/R. The same distractors are drawn for a prompt's real image, its
VQGAN reconstruction and its generated images (seeded by the prompt's position), so the three are comparable;
the real-image value is the ceiling the others are read against.

The candidate pool is the first caption (caption_index 0, when the dataset has several per image) of every image
of the dataset's train split, grouped by the `group` feature (`emoji` when present, else `key`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

R = 100


@dataclasses.dataclass
class CaptionPool:
    """Distractor captions and the group (item) each belongs to."""

    captions: list[str]
    groups: np.ndarray  # object [N]
    _emb: np.ndarray | None = None

    def embeddings(self, clip: Any) -> np.ndarray:
        if self._emb is None:
            self._emb = _normalize(clip.embed_texts(self.captions))
        return self._emb


def group_key(features: Mapping[str, Any]) -> str:
    """The feature whose value says which captions describe the same item."""
    return "emoji" if "emoji" in features else "key"


def caption_pool(data: Mapping[str, Any], split: str = "train") -> CaptionPool:
    """The first caption of every image of `split` of the configured (built) dataset."""
    from dalle.data import build

    builder = build.load_builder(data)
    group = group_key(builder.info.features)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    caps, groups = [], []
    for ex in ds.as_numpy_iterator():
        if int(ex.get("caption_index", 0)) != 0:
            continue
        caps.append(ex["caption"].decode("utf-8"))
        groups.append(ex[group].decode("utf-8"))
    if len(set(groups)) < R:
        raise ValueError(f"R-precision needs captions of >= {R} distinct items in split {split!r} of "
                         f"{builder.name!r}; it has {len(set(groups))}")
    return CaptionPool(caps, np.array(groups, dtype=object))


def distractors(pool: CaptionPool, group: str, seed: int) -> np.ndarray:
    """Indices of R - 1 pool captions of items other than `group`, the same for the same (group, seed)."""
    rng = np.random.default_rng(seed)
    others = np.flatnonzero(pool.groups != group)
    return rng.choice(others, R - 1, replace=False)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def ranks_first(clip: Any, images: np.ndarray, captions: Sequence[str], groups: Sequence[str],
                seeds: Sequence[int], pool: CaptionPool) -> np.ndarray:
    """bool [N]: image i's true caption scores strictly above its R - 1 distractors (ties count as misses)."""
    if not len(images) == len(captions) == len(groups) == len(seeds):
        raise ValueError(f"{len(images)} images, {len(captions)} captions, {len(groups)} groups, {len(seeds)} seeds")
    if len(images) == 0:
        return np.zeros(0, bool)
    img = _normalize(clip.embed_images(images))
    true = _normalize(clip.embed_texts(list(captions)))
    pool_emb = pool.embeddings(clip)
    out = np.zeros(len(images), bool)
    for i in range(len(images)):
        d = pool_emb[distractors(pool, groups[i], seeds[i])]
        out[i] = float(img[i] @ true[i]) > float(np.max(d @ img[i]))
    return out


def summarize(hits: np.ndarray, backbone: str) -> dict[str, Any]:
    """{"r1", "stderr", "count", "chance", "backbone"}: R@1 with its binomial standard error."""
    n = int(hits.size)
    if n == 0:
        return {"r1": None, "count": 0, "backbone": backbone, "note": "no images"}
    p = float(hits.mean())
    return {"r1": p, "stderr": math.sqrt(p * (1 - p) / n), "count": n, "chance": 1.0 / R, "backbone": backbone}
