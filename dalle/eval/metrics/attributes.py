"""`skin_tone` and `style`: does a generated image show the skin tone / vendor style its caption asks for?

Read back by classifiers fitted on the train split (dalle.eval.attribute_classifiers); each result carries the
reader's accuracy on real validation images. Per split, over the prompts that ask for the attribute, plus
`zero_shot`: the prompts whose combination was held out of training (the dataset's zero_shot_kind). Needs dataset
prompts with the attribute (the emoji collection); null with the reason otherwise."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from dalle.eval.metrics import EvalContext, Metric, register_metric

# metric name -> (dataset feature, zero_shot_kind of its held-out prompts)
ATTRIBUTES = {"skin_tone": ("skin_tone", "skin_tone"), "style": ("vendor", "style")}


def _asks(p: Any, feature: str) -> bool:
    from dalle.data import emoji as emoji_lib

    v = p.fields.get(feature, "")
    return v in emoji_lib.TONE_NAMES if feature == "skin_tone" else bool(v)


def _reader(ctx: EvalContext, feature: str):
    from dalle.eval import attribute_classifiers

    return ctx.shared_value(f"reader_{feature}", lambda: attribute_classifiers.fit_reader(ctx.data, feature))


def _score(ctx: EvalContext, name: str, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
    feature, kind = ATTRIBUTES[name]
    if ctx.data is None or not prompts or any(p.reference is None for p in prompts):
        return {"accuracy": None, "note": f"{name} needs dataset prompts with a {feature!r} feature"}
    idx = [i for i, p in enumerate(prompts) if _asks(p, feature)]
    if not idx:
        return {"accuracy": None, "count": 0, "note": f"no prompt of this set asks for a {feature}"}
    reader = _reader(ctx, feature)
    k = images.shape[1]
    want = [prompts[i].fields[feature] for i in idx for _ in range(k)]
    got = reader.read(images[idx].reshape(-1, *images.shape[2:]))
    hits = np.array(got) == np.array(want)
    zs = np.array([prompts[i].fields.get("zero_shot_kind") == kind for i in idx for _ in range(k)])

    def frac(h: np.ndarray) -> dict[str, Any]:
        if not h.size:
            return {"accuracy": None, "count": 0}
        p = float(h.mean())
        return {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / h.size), "count": int(h.size)}

    return {**frac(hits), "zero_shot": frac(hits[zs]), "reader_validation_accuracy": reader.validation_accuracy,
            "reader_validation_count": reader.validation_count, "chance": 1.0 / len(reader.classifier.labels)}


def _ceiling(name: str):
    def ceiling(ctx: EvalContext) -> dict[str, Any]:
        out = {}
        for split in ctx.splits:
            sub = [p for p in ctx.prompts if p.split == split]
            if not sub or any(p.reference is None for p in sub):
                return {"note": f"{name} needs dataset prompts"}
            real = np.stack([p.reference for p in sub])
            entry = {"real": _score(ctx, name, real[:, None], sub)}
            if ctx.roundtrip is not None:
                entry["reconstructed"] = _score(ctx, name, ctx.roundtrip(real)[:, None], sub)
            out[split] = entry
        return out
    return ceiling


def _measure(name: str):
    def measure(ctx: EvalContext, images: np.ndarray, prompts: Sequence[Any]) -> dict[str, Any]:
        return _score(ctx, name, images, prompts)
    return measure


for _name, (_feature, _) in ATTRIBUTES.items():
    register_metric(Metric(
        name=_name,
        description=f"fraction of images whose {_feature} (read by a train-split classifier) is the asked one",
        measure=_measure(_name),
        per_split=True,
        overall=False,
        ceiling=_ceiling(_name),
    ))
