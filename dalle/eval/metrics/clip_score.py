"""`clip_score`: CLIP score (mean max(100 cos, 0), dalle.eval.clip_score) of the kept images against their
captions, per split and over all prompts, named with the CLIP backbone. Null without eval.clip_checkpoint."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, captions, flat, register_metric

NO_CLIP = {"clip_score": None, "note": "no eval.clip_checkpoint"}


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    if ctx.clip is None:
        return dict(NO_CLIP)
    from dalle.eval import clip_score

    return clip_score.clip_score(ctx.clip, flat(images), captions(images, prompts))


def not_asked(ctx: EvalContext) -> dict[str, Any]:
    return dict(NO_CLIP) if ctx.clip is None else {"clip_score": None, "note": "not asked"}


register_metric(Metric(
    name="clip_score",
    description="CLIP score of the kept images against their captions (needs eval.clip_checkpoint)",
    measure=measure,
    per_split=True,
    not_asked=not_asked,
))
