"""`r_precision`: R@1 of the kept images (and of each prompt's first sample, without reranking) against 99
captions of other items, by the eval CLIP (dalle.eval.r_precision); its ceiling is the R@1 of the prompts' real
images and of their image-tokenizer round trips. Needs dataset prompts (real images, a train split for the
distractors) and eval.clip_checkpoint; null with the reason otherwise."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, flat, register_metric


def _why_not(ctx: EvalContext, prompts: Sequence[Any]) -> str | None:
    if ctx.clip is None:
        return "no eval.clip_checkpoint"
    if ctx.data is None or not prompts or any(p.reference is None for p in prompts):
        return "R-precision needs dataset prompts (real images and their items), not a prompt file"
    return None


def _pool(ctx: EvalContext):
    from dalle.eval import r_precision

    return ctx.shared_value("r_precision_pool", lambda: r_precision.caption_pool(ctx.data, "train"))


def _hits(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> np.ndarray:
    """images [n, k, H, W, 3] of n prompts -> bool [n * k]."""
    from dalle.eval import r_precision

    pool = _pool(ctx)
    key = r_precision.group_key(prompts[0].fields)
    k = images.shape[1]
    rows = [p for p in prompts for _ in range(k)]
    return r_precision.ranks_first(ctx.clip, flat(images), [p.caption for p in rows],
                                   [str(p.fields.get(key, p.caption)) for p in rows],
                                   [_seed(p) for p in rows], pool)


def _seed(p: Any) -> int:
    """The distractor seed of a prompt: its split and position (the same for its real, round-trip and generated
    images, and across guidance scales and runs)."""
    import zlib

    return (zlib.crc32(p.split.encode("utf-8")) & 0xFFFF) * 1_000_003 + int(p.index)


def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    from dalle.eval import r_precision

    why = _why_not(ctx, prompts)
    if why:
        return {"r1": None, "note": why}
    out = r_precision.summarize(_hits(ctx, images, prompts), ctx.clip.backbone)
    if ctx.first_candidates is not None:
        first = r_precision.summarize(_hits(ctx, ctx.first_of(prompts), prompts), ctx.clip.backbone)
        out["r1_first_sample"], out["stderr_first_sample"] = first["r1"], first.get("stderr")
    return out


def ceiling(ctx: EvalContext) -> dict[str, Any]:
    """Per split: R@1 of the real images and of their round trips through the image tokenizer."""
    from dalle.eval import r_precision

    why = _why_not(ctx, ctx.prompts)
    if why:
        return {"note": why}
    out: dict[str, Any] = {}
    for split in ctx.splits:
        sub = [p for p in ctx.prompts if p.split == split]
        real = np.stack([p.reference for p in sub])[:, None]
        entry = {"real": r_precision.summarize(_hits(ctx, real, sub), ctx.clip.backbone)}
        if ctx.roundtrip is not None:
            recon = ctx.roundtrip(real[:, 0])[:, None]
            entry["reconstructed"] = r_precision.summarize(_hits(ctx, recon, sub), ctx.clip.backbone)
        out[split] = entry
    return out


register_metric(Metric(
    name="r_precision",
    description="R@1: the image's caption ranked first among 100 (99 of other items) by the eval CLIP",
    measure=measure,
    per_split=True,
    ceiling=ceiling,
))
