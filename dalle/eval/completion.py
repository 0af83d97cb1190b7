"""Image completion on the shapes world (DALL·E's showcase: the top of a picture given, the rest drawn to match a
caption), measured the way the issue of record asks: given the top of a multi-object scene and the caption that
names every object, does the kept object survive and is the requested one drawn?

For every eval prompt whose scene has objects in the grid's top row (kept) and objects below it (drawn), the
scene is rendered, its top `keep_rows` rows of image codes are kept (`Generator.completion_prompt`) and the rest
sampled with the caption; the analyzer reads the image back:
  * `kept`: every top-row object of the scene is there, exactly (colour, shape, size, cell);
  * `caption`: everything the caption asks is true of the image (the compositional accuracy's `all`);
  * `both`: both at once;
  * `caption_without_image`: the same captions and seeds sampled without the image prompt, for comparison.
Default `keep_rows`: the code rows that lie inside the grid's top row (about the top third of the image).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from dalle.data import shapes
from dalle.eval import analyzer as analyzer_lib
from dalle.eval import compositional


def default_keep_rows(image_size: int, tokens_per_side: int) -> int:
    """The code rows entirely inside the top row of the scene grid (at least one)."""
    top_row_bottom = shapes.cell_bounds(0, image_size, image_size)[1]
    return max(1, top_row_bottom // (image_size // tokens_per_side))


def split_objects(scene: shapes.Scene) -> tuple[list[shapes.ShapeObject], list[shapes.ShapeObject]]:
    """(objects in the grid's top row: partly given by the kept rows, objects below: to be drawn)."""
    kept = [o for o in scene.objects if o.row == 0]
    return kept, [o for o in scene.objects if o.row > 0]


def eligible(prompts: Sequence[Any]) -> list[Any]:
    """Prompts with a scene that has both kept and drawn objects (other prompts test nothing here)."""
    out = []
    for p in prompts:
        if getattr(p, "scene", None) is None or getattr(p, "request", None) is None:
            continue
        kept, drawn = split_objects(p.scene)
        if kept and drawn:
            out.append(p)
    return out


def kept_survives(found: shapes.Scene, scene: shapes.Scene) -> bool:
    """Every top-row object of `scene` is among the objects found, with every attribute right."""
    kept, _ = split_objects(scene)
    m = analyzer_lib.matches(found, [shapes.RequestedObject(o.color, o.shape, o.size, o.cell) for o in kept])
    return all(m[a] for a in ("color", "shape", "size", "position"))


def measure(gen: Any, data: Mapping[str, Any], prompts: Sequence[Any], *, scale: float, keep_rows: int = 0,
            seed: int = 0, batch_size: int = 8, sampler: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Completion accuracy per split. `gen`: a dalle.generation.Generator; `prompts`: eval prompts with scenes
    (dalle.eval.main.Prompt or compositional.ShapesPrompt); `sampler`: top_k / top_p / temperature. Returns
    {"keep_rows", "scale", "splits": {split: {"prompts", "kept", "caption", "both", "caption_without_image"}}}
    with each rate as [mean, standard error], plus the images ("_images": reference, completed, plain)."""
    world = shapes.ShapesWorld.from_config(data)
    side = gen.vqgan.tokens_per_side
    rows = keep_rows or default_keep_rows(world.image_size, side)
    chosen = eligible(prompts)
    out: dict[str, Any] = {"keep_rows": rows, "code_rows": side, "scale": float(scale), "splits": {}}
    if not chosen:
        out["why"] = "no eval prompt has objects both in the scene grid's top row and below it (one-object world?)"
        return out
    an = analyzer_lib.get_analyzer(world)
    sampler = dict(sampler or {})
    references = compositional.render_prompts(data, chosen)
    completed, plain = [], []
    for b, start in enumerate(range(0, len(chosen), batch_size)):
        batch = chosen[start:start + batch_size]
        captions = [p.caption for p in batch]
        image_prompt = np.stack([gen.completion_prompt(r, rows) for r in references[start:start + batch_size]])
        kw = dict(num_images=1, seed=seed + b, condition_scale=float(scale), **sampler)
        completed.append(gen.images(captions, image_prompt=image_prompt, **kw))
        plain.append(gen.images(captions, **kw))
    completed_all, plain_all = np.concatenate(completed), np.concatenate(plain)
    per_split: dict[str, dict[str, list[bool]]] = {}
    for p, done, free in zip(chosen, completed_all, plain_all):
        found, found_free = an.analyze_scene(done), an.analyze_scene(free)
        kept = kept_survives(found, p.scene)
        caption = analyzer_lib.matches(found, p.request)["all"]
        hits = per_split.setdefault(p.split, {"kept": [], "caption": [], "both": [], "caption_without_image": []})
        hits["kept"].append(kept)
        hits["caption"].append(caption)
        hits["both"].append(kept and caption)
        hits["caption_without_image"].append(analyzer_lib.matches(found_free, p.request)["all"])
    for split, hits in per_split.items():
        out["splits"][split] = {"prompts": len(hits["kept"]),
                                **{k: list(compositional.rate(v)) for k, v in hits.items()}}
    out["_images"] = {"reference": references, "completed": completed_all, "plain": plain_all,
                      "splits": [p.split for p in chosen]}
    return out
