"""`compositional`: compositional accuracy of shapes prompts, per split and attribute; the shapes analyzer reads
the generated images back (dalle.eval.compositional). Prompts from a file have no scene to check: null, said so."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, flat, register_metric


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    if ctx.data is None or not all(p.request is not None for p in prompts):
        return {"all": None, "note": "prompts from a file have no scene to check"}
    from dalle.eval import compositional

    requests = [p.request for p in prompts for _ in range(images.shape[1])]
    return compositional.accuracy(flat(images), requests, ctx.data)


register_metric(Metric(
    name="compositional",
    description="fraction of images with every requested attribute right (shapes analyzer), per split",
    measure=measure,
    per_split=True,
    overall=False,
))
