"""`kid`: kernel Inception distance (Bińkowski et al. 2018; mean and std over subsets, dalle.eval.fid) between the
kept images' features and the reference features, with the same network as `fid`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, register_metric
from dalle.eval.metrics.fid import not_asked, unavailable


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    missing = unavailable(ctx)
    if missing is not None:
        return missing
    from dalle.eval import fid

    feats, net, reference, ev = ctx.image_features(images), ctx.features, ctx.reference, ctx.settings
    if reference.features is None or len(feats) < 2:
        return {"value": None, "note": "reference file keeps no features" if reference.features is None
                else "too few images"}
    mean, std = fid.kernel_inception_distance(feats, reference.features, ev.kid_subsets, ev.kid_subset_size,
                                              seed=ev.seed)
    return {"value": mean, "std": std, "metric": net.metric_prefix.replace("FID", "KID"), "network": net.name,
            "subset_size": min(ev.kid_subset_size, len(feats), len(reference.features))}


register_metric(Metric(
    name="kid",
    description="KID of all kept images against the reference features (mean and std over eval.kid_subsets)",
    measure=measure,
    not_asked=not_asked,
    needs=("features",),
))
