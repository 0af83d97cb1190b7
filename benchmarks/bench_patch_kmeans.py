"""How much a grid of 8x8 tokens can keep of a 32 px image: PSNR of a k-means codebook of raw 4x4 patches (no
network), by codebook size, on the emoji validation images. It sizes the CPU VQGAN's codebook
(configs/vqgan_emoji.py): with 64 tokens per image, the codebook bounds the reconstruction error well before the
network does.

    .venv/bin/python -m benchmarks.bench_patch_kmeans [--config configs/emoji.py] [--sizes 512,2048]

Needs the built emoji dataset (`dalle data --config configs/emoji.py`). Fitted on 120,000 patches of the first
4,000 train images (first caption only), 15 Lloyd iterations from a seeded random start.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks import common


def split_images(data, split: str, limit: int) -> np.ndarray:
    from dalle.data import build

    out = []
    for ex in build.load_builder(data).as_dataset(split=split, shuffle_files=False).as_numpy_iterator():
        if int(ex.get("caption_index", 0)) == 0:
            out.append(ex["image"])
        if len(out) >= limit:
            break
    return np.stack(out).astype(np.float32)


def patches(images: np.ndarray, p: int = 4) -> np.ndarray:
    n, h, w, c = images.shape
    return images.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, p * p * c)


def kmeans(points: np.ndarray, k: int, iterations: int, seed: int = 0) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    @jax.jit
    def assign(x, c):
        return jnp.argmin((x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None], axis=1)

    rng = np.random.default_rng(seed)
    centers = points[rng.choice(len(points), k, replace=False)].copy()
    for _ in range(iterations):
        a = np.asarray(assign(points, centers))
        sums = np.zeros_like(centers)
        np.add.at(sums, a, points)
        counts = np.bincount(a, minlength=k)
        empty = counts == 0
        centers[~empty] = sums[~empty] / counts[~empty, None]
        centers[empty] = points[rng.integers(0, len(points), int(empty.sum()))]
    return centers, assign


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/emoji.py")
    p.add_argument("--sizes", default="512,2048")
    args = p.parse_args()
    from dalle import config as config_lib

    data = config_lib.load_config(args.config).data
    train = split_images(data, "train", 4000)
    val = split_images(data, "validation", 10_000)
    rng = np.random.default_rng(0)
    pts = patches(train)
    pts = pts[rng.choice(len(pts), min(120_000, len(pts)), replace=False)]
    rows = []
    for k in [int(s) for s in args.sizes.split(",")]:
        t = time.time()
        centers, assign = kmeans(pts, k, 15)
        vp = patches(val)
        rec = centers[np.asarray(assign(vp, centers))]
        mse = ((vp - rec) ** 2).reshape(len(val), -1).mean(1)
        psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-9))
        rows.append([k, f"{np.log2(k):.0f}", f"{psnr.mean():.2f}", len(val), f"{time.time() - t:.0f}"])
    body = ("PSNR (dB, mean over images) of 32 px emoji validation images rebuilt from 8x8 tokens, each 4x4 patch "
            "replaced by its nearest k-means centre. A VQGAN with the same grid and codebook has a decoder that "
            "sees neighbouring codes, so it can do somewhat better, but the codebook size sets the scale.\n\n"
            + common.table(["codes", "bits per token", "PSNR", "validation images", "fit seconds"], rows))
    common.write_result("patch_kmeans_emoji", "How much 8x8 tokens keep: a k-means patch codebook on emoji",
                        f".venv/bin/python -m benchmarks.bench_patch_kmeans --sizes {args.sizes}", body)


if __name__ == "__main__":
    main()
