"""`compositional`: compositional accuracy of shapes prompts, per split and attribute, with standard errors and per
kind of prompt (one/two/three objects, each relation, counts, background, each held-out combination), for the kept
(reranked) images and for each prompt's first sample (no reranking); the shapes analyzer reads the generated images
back (dalle.eval.compositional). Prompts from a file have no scene to check: null, said so."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, flat, register_metric


def _accuracy(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    from dalle.eval import compositional

    k = images.shape[1]
    rows = [p for p in prompts for _ in range(k)]
    return compositional.accuracy(flat(images), [p.request for p in rows], ctx.data,
                                  [compositional.prompt_kinds(p.request, p.scene) for p in rows])


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    if ctx.data is None or not all(p.request is not None for p in prompts):
        return {"all": None, "note": "prompts from a file have no scene to check"}
    from dalle.eval import compositional

    out = _accuracy(ctx, images, prompts)
    if ctx.first_candidates is not None:
        out["first_sample"] = _accuracy(ctx, ctx.first_of(prompts), prompts)
    if any(p.scene is not None and p.scene.tag.startswith("pair:") for p in prompts):
        firsts = ctx.first_of(prompts) if ctx.first_candidates is not None else images
        out["held_out_drawn"] = compositional.held_out_drawn(firsts, prompts, ctx.data)
    return out


register_metric(Metric(
    name="compositional",
    description="fraction of images with every requested attribute right (shapes analyzer), per split",
    measure=measure,
    per_split=True,
    overall=False,
))
