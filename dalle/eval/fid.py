"""FID and KID: "clean" preprocessing, feature networks, Fréchet distance in float64, reference statistics files.

Why each choice (Heusel et al. 2017; mseitzer/pytorch-fid src/pytorch_fid/inception.py; Parmar et al. 2022,
"On Aliased Resizing and Surprising Subtleties in GAN Evaluation", GaParmar/clean-fid): FID is only comparable with
the TF 2015-12-05 Inception (dalle/eval/inception.py) and with clean-fid's "clean" resize (PIL bicubic to 299x299
on float channels, no uint8 rounding after the resize); other resizers and JPEG round-trips move FID a lot, so generated images are kept as PNG/uint8. When the
Inception weights are absent, a configured feature network (our CLIP image tower) can stand in; its numbers are
then named "FID-CLIP (<backbone>)" everywhere and are not comparable with published FIDs.

    net = FeatureNetwork.inception(params)          # or FeatureNetwork.clip(model, params, backbone_name)
    stats = compute_statistics(net.features(images_uint8))
    fid = frechet_distance(stats, reference_stats)
    kid_mean, kid_std = kernel_inception_distance(feats_a, feats_b)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import numpy as np
from scipy import linalg

STATS_FORMAT = "dalle-fid-stats-v1"


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------------------------------------------
def clean_resize(images: Any, size: int = 299) -> np.ndarray:
    """clean-fid's "clean" mode: each channel as a float32 PIL image, bicubic to size x size, clipped to
    [0, 255]; returns float32 [N, size, size, 3] in [0, 1]. Input: uint8 [N, H, W, 3] (float [0, 1] is rounded to
    uint8 first, as PNG storage would)."""
    from PIL import Image

    from dalle.modeling.clip.model import to_uint8

    x = to_uint8(images)
    out = np.empty((x.shape[0], size, size, 3), np.float32)
    for i, im in enumerate(x):
        if im.shape[:2] == (size, size):
            out[i] = im
            continue
        for c in range(3):
            ch = Image.fromarray(im[:, :, c].astype(np.float32), mode="F")
            out[i, :, :, c] = np.asarray(ch.resize((size, size), resample=Image.BICUBIC))
    np.clip(out, 0.0, 255.0, out=out)
    return out / 255.0


# ----------------------------------------------------------------------------------------------------------------
# Feature networks
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FeatureNetwork:
    """Images (uint8 [N, H, W, 3]) -> float64 features [N, D]; `name` is written next to every number."""

    name: str  # "inception-2015-12-05 (pytorch-fid port)" or "CLIP image tower: <backbone>"
    metric_prefix: str  # "FID" / "KID" for Inception; "FID-CLIP" / "KID-CLIP" for the fallback
    preprocessing: str
    fn: Callable[[np.ndarray], np.ndarray]
    batch_size: int = 32

    def features(self, images: Any) -> np.ndarray:
        x = np.asarray(images)
        outs = [np.asarray(self.fn(x[i:i + self.batch_size]), np.float64) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, 0))

    @classmethod
    def inception(cls, params: Any, batch_size: int = 32) -> "FeatureNetwork":
        from dalle.eval import inception

        return cls("inception-2015-12-05 pool3 (pytorch-fid port, JAX)", "FID",
                   "clean (PIL bicubic to 299, float)",
                   lambda x: inception.inception_features(params, clean_resize(x), batch_size), batch_size)

    @classmethod
    def clip(cls, model: Any, params: Any, backbone: str, batch_size: int = 64) -> "FeatureNetwork":
        """The fallback: L2-normalized CLIP image embeddings (OpenAI preprocessing: PIL bicubic + center crop)."""
        return cls(f"CLIP image tower: {backbone}", "FID-CLIP",
                   f"PIL bicubic to {model.cfg.image_size} + center crop, CLIP mean/std",
                   lambda x: model.embed_images(params, x, batch_size), batch_size)


# ----------------------------------------------------------------------------------------------------------------
# Statistics and distances
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Statistics:
    mu: np.ndarray  # float64 [D]
    sigma: np.ndarray  # float64 [D, D]
    count: int
    network: str = ""
    preprocessing: str = ""
    source: str = ""
    features: np.ndarray | None = None  # kept (for KID) when small enough

    def save(self, path: str) -> str:
        """`.npz` with mu, sigma, count, the network and preprocessing named, and features when kept."""
        meta = {"format": STATS_FORMAT, "count": self.count, "network": self.network,
                "preprocessing": self.preprocessing, "source": self.source}
        arrays = {"mu": self.mu, "sigma": self.sigma, "meta": np.array(json.dumps(meta))}
        if self.features is not None:
            arrays["features"] = self.features.astype(np.float32)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str) -> "Statistics":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"FID reference statistics {path!r} do not exist: make them with "
                                    "`dalle eval reference --config ... --out PATH`")
        with np.load(path) as z:
            if "meta" not in z or "mu" not in z or "sigma" not in z:
                raise ValueError(f"{path}: not a {STATS_FORMAT} file (needs mu, sigma, meta)")
            meta = json.loads(str(z["meta"]))
            feats = z["features"].astype(np.float64) if "features" in z else None
            return cls(z["mu"].astype(np.float64), z["sigma"].astype(np.float64), int(meta["count"]),
                       meta.get("network", ""), meta.get("preprocessing", ""), meta.get("source", ""), feats)


def compute_statistics(features: np.ndarray, network: str = "", preprocessing: str = "", source: str = "",
                       keep_features: bool = True) -> Statistics:
    """Mean and (unbiased, as np.cov) covariance in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors [N, D] for a covariance, got shape {f.shape}")
    return Statistics(f.mean(axis=0), np.cov(f, rowvar=False), f.shape[0], network, preprocessing, source,
                      f if keep_features else None)


def frechet_distance(mu1: Any, sigma1: Any = None, mu2: Any = None, sigma2: Any = None, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) in float64, as pytorch-fid's `calculate_frechet_distance`.

    Accepts (mu1, sigma1, mu2, sigma2) or two `Statistics`. Safeguards: when sqrtm of the product is not finite
    (near-singular covariances, fewer samples than dimensions) eps is added to both diagonals; a small imaginary
    part from round-off is dropped, a large one (> 1e-3 on the diagonal) raises."""
    if isinstance(mu1, Statistics) and isinstance(sigma1, Statistics):
        a, b = mu1, sigma1
        if a.network and b.network and a.network != b.network:
            raise ValueError(f"statistics from different networks: {a.network!r} vs {b.network!r}")
        mu1, sigma1, mu2, sigma2 = a.mu, a.sigma, b.mu, b.sigma
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors have different shapes {mu1.shape} and {mu2.shape}")
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"covariances have different shapes {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm of the covariance product has an imaginary part of "
                             f"{np.max(np.abs(covmean.imag)):.3g}: the statistics are not valid covariances")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al.): unbiased MMD^2 with the kernel (x.y / d + 1)^3, averaged over random subsets of
    min(subset_size, N_a, N_b) rows drawn without replacement; returns (mean, std over subsets)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"KID needs two [N, D] feature sets of the same D, got {a.shape} and {b.shape}")
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        values[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(values.mean()), float(values.std())
