"""`fid`: Fréchet distance (Heusel et al. 2017) between the kept images' features and the reference statistics,
with the FID Inception or the configured fallback network (reported as FID-CLIP then; dalle.eval.fid)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, register_metric


def unavailable(ctx: EvalContext) -> dict[str, Any] | None:
    """The null entry of a feature-based metric when the job has no network or no reference (None: it has both)."""
    if ctx.features is None:
        return {"value": None, "note": "no feature network (see notes)"}
    if ctx.reference is None:
        return {"value": None, "note": "no reference statistics (see notes)"}
    return None


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    missing = unavailable(ctx)
    if missing is not None:
        return missing
    from dalle.eval import fid

    feats, net, reference = ctx.image_features(images), ctx.features, ctx.reference
    if len(feats) < 2:
        return {"value": None, "note": f"{len(feats)} images: too few for a covariance"}
    stats = fid.compute_statistics(feats, net.name, net.preprocessing)
    out = {"value": fid.frechet_distance(stats, reference), "metric": net.metric_prefix, "network": net.name,
           "images": len(feats), "reference_images": reference.count}
    if len(feats) <= feats.shape[1]:
        out["note"] = (f"{len(feats)} images for {feats.shape[1]}-d features: the covariance is singular and FID "
                       "is strongly biased upward at this sample size")
    return out


def not_asked(ctx: EvalContext) -> dict[str, Any]:
    return unavailable(ctx) or {"value": None}


register_metric(Metric(
    name="fid",
    description="FID of all kept images against eval.fid_reference (or renders of the same prompts)",
    measure=measure,
    not_asked=not_asked,
    needs=("features",),
))
