"""Compositional accuracy on the captioned-shapes world: does each image show exactly what its caption asks?

For every (image, caption request) the analyzer (dalle/eval/analyzer.py) reads the objects back from pixels and
`matches` says per attribute (count, color, shape, size, position incl. relations, background, all) whether the
request is satisfied. Rates are reported per attribute and overall, per split: `train` (train-like prompts),
`validation` (unseen scenes, seen combinations), `zero_shot` (held-out color-shape pairs and relations) and
`paraphrase` (the validation scenes captioned outside the caption grammar: dalle/eval/paraphrase.py), `relations`
(validation-stream scenes whose caption states a seen relation: the validation split has too few); each with its
standard error and broken down by what the prompt asks (`prompt_kinds`: one/two/three objects, each relation,
counted groups, background, each held-out combination).

    prompts = shapes_prompts(config.data, "zero_shot", 64)
    result = accuracy(images, [p.request for p in prompts], config.data)   # {"all": 0.8, "color": .., "images": n}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from dalle.data.shapes import Request, Scene, ShapesWorld
from dalle.eval import analyzer as analyzer_lib

ATTRIBUTES = analyzer_lib.ATTRIBUTES  # count, color, shape, size, position, background, all


@dataclasses.dataclass(frozen=True)
class ShapesPrompt:
    """One evaluation prompt: the caption, what it asks for, and the scene it was made from (for reference
    images: the rendered scene is what a perfect generator could draw)."""

    split: str
    index: int
    caption: str
    request: Request
    scene: Scene


PARAPHRASE = "paraphrase"  # the eval-only split: validation scenes, off-grammar captions
# Eval-only: the validation stream's scenes (from index 0 on, past the built split's size if need be) whose caption
# states a relation. About one caption in sixteen of the multi-object world does, so the first 200 validation
# prompts hold ~10; these are unseen scenes of seen relations like the validation split's. A relations prompt's
# `index` is its validation-stream index (the other splits' is its position).
RELATIONS = "relations"
RELATIONS_SCAN = 200  # scenes scanned per requested prompt before giving up (a world without relations)


def shapes_prompts(data: Mapping[str, Any], split: str, count: int) -> list[ShapesPrompt]:
    """The first `count` examples of a split, with the caption wording the data pipeline gives them; for
    `paraphrase`, the first `count` validation scenes with the captions of dalle.eval.paraphrase; for `relations`,
    the first `count` validation-stream scenes whose caption states a relation."""
    from dalle.eval import paraphrase

    world = ShapesWorld.from_config(data)
    if split == RELATIONS:
        return _relation_prompts(world, count)
    out = []
    for i in range(count):
        if split == PARAPHRASE:
            scene = world.scene("validation", i)
            cap = paraphrase.paraphrase(scene, world.rng("validation", i, stream=2))
        else:
            scene = world.scene(split, i)
            cap = world.describe(scene, world.rng(split, i, stream=1))
        out.append(ShapesPrompt(split, i, cap.text, cap.request, scene))
    return out


def _relation_prompts(world: ShapesWorld, count: int) -> list[ShapesPrompt]:
    if world.max_objects < 2:
        raise ValueError(f"eval split {RELATIONS!r}: the world has at most {world.max_objects} object per scene, so "
                         "no caption states a relation (data.max_objects must be at least 2)")
    out, i = [], 0
    while len(out) < count:
        if i >= RELATIONS_SCAN * count:
            raise ValueError(f"eval split {RELATIONS!r}: only {len(out)} of the first {i} validation scenes' captions "
                             f"state a relation, {count} asked")
        scene = world.scene("validation", i)
        cap = world.describe(scene, world.rng("validation", i, stream=1))
        if cap.request.relations:
            out.append(ShapesPrompt(RELATIONS, i, cap.text, cap.request, scene))
        i += 1
    return out


def prompt_kinds(request: Request, scene: Scene | None = None) -> list[str]:
    """What a prompt asks, as the groups its accuracy is also reported under: `objects:N` (N requested objects),
    `relation:<name>` per relation, `count` (a counted group: "two green triangles"), `background` (a background
    colour named), `held_out:<combination>` (the zero_shot scene's held-out pair or relation)."""
    kinds = [f"objects:{len(request.objects)}"]
    kinds += [f"relation:{rel}" for _, rel, _ in request.relations]
    pairs = [(o.color, o.shape) for o in request.objects]
    if len(set(pairs)) < len(pairs):
        kinds.append("count")
    if request.background is not None:
        kinds.append("background")
    if scene is not None and scene.tag:
        kinds.append(f"held_out:{scene.tag.split(':', 1)[1]}")
    return kinds


def render_prompts(data: Mapping[str, Any], prompts: Sequence[ShapesPrompt]) -> np.ndarray:
    """uint8 [N, S, S, 3] renders of the prompts' scenes (the reference set for FID and the accuracy check)."""
    world = ShapesWorld.from_config(data)
    return np.stack([world.render(p.scene) for p in prompts]) if prompts else np.zeros((0, world.image_size,
                                                                                          world.image_size, 3),
                                                                                         np.uint8)


def judge(images: Any, requests: Sequence[Request | str], data: Mapping[str, Any] | ShapesWorld
          ) -> list[dict[str, bool]]:
    """Per-image attribute matches. images: uint8 [N, H, W, 3] or float in [0, 1]; requests: `Request`s or
    their JSON (the shapes iterator's "request" field)."""
    from dalle.modeling.clip.model import to_uint8

    x = to_uint8(images)
    if len(x) != len(requests):
        raise ValueError(f"{len(x)} images but {len(requests)} requests")
    world = data if isinstance(data, ShapesWorld) else ShapesWorld.from_config(data)
    an = analyzer_lib.get_analyzer(world)
    out = []
    for image, req in zip(x, requests):
        req = Request.from_json(req) if isinstance(req, (str, bytes)) else req
        scene = an.analyze_scene(image)
        out.append(analyzer_lib.matches(scene, req))
    return out


def held_out_drawn(images: Any, prompts: Sequence[ShapesPrompt], data: Mapping[str, Any] | ShapesWorld
                   ) -> dict[str, dict[str, int]]:
    """What was drawn for each held-out colour-shape pair: {pair: {"<color> <shape>" | "nothing": images}}, from
    the object the analyzer finds in the pair's cell of each prompt's scene (the zero_shot evidence of whether the
    colour or the shape word wins when the two were never seen together). Prompts without a held-out pair are
    skipped; images: uint8 [P, k, H, W, 3] (k candidates per prompt) or [P, H, W, 3]."""
    from dalle.modeling.clip.model import to_uint8

    world = data if isinstance(data, ShapesWorld) else ShapesWorld.from_config(data)
    an = analyzer_lib.get_analyzer(world)
    x = np.asarray(images)
    x = x[:, None] if x.ndim == 4 else x
    x = to_uint8(x.reshape(-1, *x.shape[2:])).reshape(x.shape)
    out: dict[str, dict[str, int]] = {}
    for p, per_prompt in zip(prompts, x):
        if not p.scene.tag.startswith("pair:"):
            continue
        pair = p.scene.tag.split(":", 1)[1]
        target = next(o for o in p.scene.objects if f"{o.color} {o.shape}" == pair)
        for image in per_prompt:
            found = {o.cell: o for o in an.analyze_scene(image).objects}
            d = found.get(target.cell)
            name = f"{d.color} {d.shape}" if d is not None else "nothing"
            out.setdefault(pair, {})
            out[pair][name] = out[pair].get(name, 0) + 1
    return {pair: dict(sorted(c.items(), key=lambda kv: -kv[1])) for pair, c in sorted(out.items())}


def rate(hits: Sequence[bool]) -> tuple[float | None, float | None]:
    """(mean, standard error of the mean) of 0/1 outcomes; (None, None) for none."""
    n = len(hits)
    if not n:
        return None, None
    p = float(np.mean(hits))
    return p, float(np.sqrt(p * (1 - p) / n))


def summarize(results: Sequence[Mapping[str, bool]], kinds: Sequence[Sequence[str]] | None = None
              ) -> dict[str, Any]:
    """Rate per attribute (`count` is the attribute "as many objects as asked"), `stderr` (of `all`) and `images`
    (how many were judged); with `kinds` (one list per result: `prompt_kinds`), `by_kind`: {kind: {all, stderr,
    images}}. An empty set reports None rates, not zeros."""
    n = len(results)
    out: dict[str, Any] = {"images": n}
    for a in ATTRIBUTES:
        out[a] = rate([r[a] for r in results])[0]
    out["stderr"] = rate([r["all"] for r in results])[1]
    if kinds is not None:
        if len(kinds) != n:
            raise ValueError(f"{n} results but {len(kinds)} kind lists")
        by: dict[str, list[bool]] = {}
        for r, ks in zip(results, kinds):
            for k in ks:
                by.setdefault(k, []).append(bool(r["all"]))
        out["by_kind"] = {k: dict(zip(("all", "stderr"), rate(v)), images=len(v)) for k, v in sorted(by.items())}
    return out


def accuracy(images: Any, requests: Sequence[Request | str], data: Mapping[str, Any] | ShapesWorld,
             kinds: Sequence[Sequence[str]] | None = None) -> dict[str, Any]:
    return summarize(judge(images, requests, data), kinds)
