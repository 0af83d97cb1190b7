"""Attribute readers for generated images whose captions ask for a skin tone or a vendor style (emoji).

Both are small softmax-regression classifiers on pixel statistics, fitted on the dataset's *train* split only and
checked on its real validation images (the accuracy there is reported next to every score they give):
- skin tone: a colour histogram (8 bins per channel) of the pixels that differ from the background; emoji skin
  tones are flat palette colours, so the histogram carries them;
- vendor style: the same histogram plus histograms of gradient magnitude and of local colour variance (Noto draws
  shading, Twemoji flat shapes, OpenMoji black outlines) and an 8x8 grey thumbnail.
Numpy only; deterministic (full-batch gradient descent from zeros).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

BINS = 8


def foreground(images: np.ndarray, background: Sequence[int], tol: float = 24.0) -> np.ndarray:
    """bool [N, H, W]: pixels farther than `tol` (RGB distance) from the background colour."""
    x = np.asarray(images, np.float32)
    return np.linalg.norm(x - np.asarray(background, np.float32), axis=-1) > tol


def colour_histogram(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float [N, BINS**3]: the normalized joint RGB histogram of the masked pixels."""
    q = (np.asarray(images, np.int32) * BINS) // 256
    idx = (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]
    out = np.zeros((len(images), BINS ** 3), np.float64)
    for i in range(len(images)):
        vals = idx[i][mask[i]]
        if vals.size:
            out[i] = np.bincount(vals, minlength=BINS ** 3) / vals.size
    return out


def tone_features(images: np.ndarray, background: Sequence[int]) -> np.ndarray:
    return np.sqrt(colour_histogram(images, foreground(images, background)))


def style_features(images: np.ndarray, background: Sequence[int]) -> np.ndarray:
    x = np.asarray(images, np.float32)
    mask = foreground(images, background)
    grey = x.mean(-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    mag = np.sqrt(gx ** 2 + gy ** 2)
    edges = np.array([0, 2, 5, 10, 20, 40, 80, 1e9])
    grad_hist = np.stack([np.histogram(m[k], edges)[0] / max(int(k.sum()), 1) for m, k in zip(mag, mask)])
    n, h, w = grey.shape
    thumb = grey[:, :h - h % 8, :w - w % 8].reshape(n, 8, h // 8, 8, w // 8).mean((2, 4)).reshape(n, -1) / 255.0
    fill = mask.reshape(n, -1).mean(1, keepdims=True)
    return np.concatenate([np.sqrt(colour_histogram(images, mask)), grad_hist, thumb, fill], axis=1)


@dataclasses.dataclass
class SoftmaxClassifier:
    """Multinomial logistic regression with L2, on standardized features."""

    labels: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # [D + 1, C]

    @classmethod
    def fit(cls, x: np.ndarray, y: Sequence[str], l2: float = 1e-3, steps: int = 500, lr: float = 0.5
            ) -> "SoftmaxClassifier":
        labels = sorted(set(y))
        if len(labels) < 2:
            raise ValueError(f"a classifier needs >= 2 classes, got {labels}")
        t = np.array([labels.index(v) for v in y])
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = np.concatenate([(x - mean) / scale, np.ones((len(x), 1))], axis=1)
        onehot = np.eye(len(labels))[t]
        w = np.zeros((z.shape[1], len(labels)))
        for _ in range(steps):  # full-batch gradient descent: deterministic, and fast for these sizes
            logits = z @ w
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w -= lr * (z.T @ (p - onehot) / len(z) + l2 * w)
        return cls(labels, mean, scale, w)

    def predict(self, x: np.ndarray) -> list[str]:
        z = np.concatenate([(x - self.mean) / self.scale, np.ones((len(x), 1))], axis=1)
        return [self.labels[i] for i in np.argmax(z @ self.weights, axis=1)]


@dataclasses.dataclass
class AttributeReader:
    """A fitted classifier for one attribute, with its accuracy on real validation images."""

    attribute: str  # the dataset feature it reads ("skin_tone", "vendor")
    classifier: SoftmaxClassifier
    background: tuple[int, ...]
    validation_accuracy: float | None
    validation_count: int

    def features(self, images: np.ndarray) -> np.ndarray:
        fn = tone_features if self.attribute == "skin_tone" else style_features
        return fn(images, self.background)

    def read(self, images: np.ndarray) -> list[str]:
        return self.classifier.predict(self.features(images)) if len(images) else []


def _examples(data: Mapping[str, Any], split: str, attribute: str, keep) -> tuple[np.ndarray, list[str]]:
    from dalle.data import build

    builder = build.load_builder(data)
    if split not in builder.info.splits:
        return np.zeros((0,)), []
    images, labels = [], []
    for ex in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator():
        if int(ex.get("caption_index", 0)) != 0:
            continue
        label = ex[attribute].decode("utf-8")
        if keep(label):
            images.append(ex["image"])
            labels.append(label)
    return (np.stack(images) if images else np.zeros((0,))), labels


def fit_reader(data: Mapping[str, Any], attribute: str) -> AttributeReader:
    """Fits the reader of `attribute` ("skin_tone": single tones only; "vendor") on the train split of the
    configured dataset and measures it on the validation split's real images."""
    from dalle.data import emoji as emoji_lib

    keep = (lambda v: v in emoji_lib.TONE_NAMES) if attribute == "skin_tone" else (lambda v: bool(v))
    background = tuple(int(c) for c in data.get("emoji_background", (255, 255, 255)))
    x, y = _examples(data, "train", attribute, keep)
    if not len(y):
        raise ValueError(f"the train split has no images with a {attribute!r} to fit a reader on")
    fn = tone_features if attribute == "skin_tone" else style_features
    clf = SoftmaxClassifier.fit(fn(x, background), y)
    vx, vy = _examples(data, "validation", attribute, keep)
    acc = float(np.mean(np.array(clf.predict(fn(vx, background))) == np.array(vy))) if len(vy) else None
    return AttributeReader(attribute, clf, background, acc, len(vy))
