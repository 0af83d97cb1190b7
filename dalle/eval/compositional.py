"""Compositional accuracy on the captioned-shapes world: does each image show exactly what its caption asks?

For every (image, caption request) the analyzer (dalle/eval/analyzer.py) reads the objects back from pixels and
`matches` says per attribute (count, color, shape, size, position incl. relations, background, all) whether the
request is satisfied. Rates are reported per attribute and overall, per split: `train` (train-like prompts),
`validation` (unseen scenes, seen combinations) and `zero_shot` (held-out color-shape pairs and relations).

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


def shapes_prompts(data: Mapping[str, Any], split: str, count: int) -> list[ShapesPrompt]:
    """The first `count` examples of a split, with the caption wording the data pipeline gives them."""
    world = ShapesWorld.from_config(data)
    out = []
    for i in range(count):
        scene = world.scene(split, i)
        cap = world.describe(scene, world.rng(split, i, stream=1))
        out.append(ShapesPrompt(split, i, cap.text, cap.request, scene))
    return out


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


def summarize(results: Sequence[Mapping[str, bool]]) -> dict[str, Any]:
    """Rate per attribute (`count` is the attribute "as many objects as asked") plus `images` (how many were
    judged); an empty set reports None rates, not zeros."""
    n = len(results)
    out: dict[str, Any] = {"images": n}
    for a in ATTRIBUTES:
        out[a] = float(np.mean([r[a] for r in results])) if n else None
    return out


def accuracy(images: Any, requests: Sequence[Request | str], data: Mapping[str, Any] | ShapesWorld
             ) -> dict[str, Any]:
    return summarize(judge(images, requests, data))
