"""Prompts people type: captions of shapes-world scenes written outside the world's caption grammar.

The training captions (dalle/data/shapes.py: `_describe`) always read like "a small red circle in the top left".
People type "red circle, top left", "please draw a big red circle" or "can you draw a circle that is red". This
module writes such captions for eval scenes, with the `Request` each one makes, so `dalle eval` can measure how far
accuracy drops off the grammar (the `paraphrase` split: validation scenes, these captions). It lives in the eval
package and nothing in training reads it: the paraphrase set stays apart from what a model learns.

Wordings (each exercised by tests/test_paraphrase.py): no article; a comma before the position; imperatives and
politeness ("draw", "please", "can you draw", "i want"); the colour after the noun ("a circle that is red", "a
circle colored red"); other position phrasings ("top-left", "in the top left area", "up in the left corner",
"near the bottom"); "one" for "a"; filler words ("some", "simple", "shape"). Relations keep the world's relation
words but lose the articles or gain filler.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dalle.data.shapes import Caption, Request, RequestedObject, Scene, ShapeObject, relation_holds

# Position phrases outside the training grammar, per cell (row-major 3x3).
_PLACES = {
    0: ["top-left", "top left area", "upper left part", "top left of the image"],
    1: ["top edge", "upper middle", "top of the image"],
    2: ["top-right", "top right area", "upper right part", "top right of the image"],
    3: ["left side", "left edge", "middle of the left side"],
    4: ["middle of the image", "very center", "image center"],
    5: ["right side", "right edge", "middle of the right side"],
    6: ["bottom-left", "bottom left area", "lower left part", "bottom left of the image"],
    7: ["bottom edge", "lower middle", "bottom of the image"],
    8: ["bottom-right", "bottom right area", "lower right part", "bottom right of the image"],
}
_SHORT_PLACES = {0: "top left", 1: "top", 2: "top right", 3: "left", 4: "center", 5: "right", 6: "bottom left",
                 7: "bottom", 8: "bottom right"}
_SIZES = {"small": ["small", "tiny"], "medium": ["medium"], "large": ["big", "large"]}
_LEADS = ["draw ", "please draw ", "can you draw ", "i want ", "show me ", "make ", "generate "]
_TAILS = ["", "", " please", " for me", " on its own"]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _object_phrase(rng: np.random.Generator, o: ShapeObject, say_size: bool) -> str:
    """One object, its colour and size worded one of several off-grammar ways."""
    size = _pick(rng, _SIZES[o.size]) + " " if say_size else ""
    style = int(rng.integers(5))
    if style == 0:
        return f"{size}{o.color} {o.shape}"  # no article
    if style == 1:
        return _a(f"{size}{o.shape} that is {o.color}")
    if style == 2:
        return f"one {size}{o.color} {o.shape}"
    if style == 3:
        return _a(f"{size}{o.shape} colored {o.color}")
    return _a(f"{size}{o.color} {o.shape} shape")


def _with_place(rng: np.random.Generator, phrase: str, cell: int) -> str:
    style = int(rng.integers(3))
    if style == 0:
        return f"{phrase}, {_SHORT_PLACES[cell]}"
    if style == 1:
        return f"{phrase} in the {_pick(rng, _PLACES[cell])}"
    return f"{phrase} near the {_pick(rng, _PLACES[cell])}"


def paraphrase(scene: Scene, rng: np.random.Generator) -> Caption:
    """An off-grammar caption of `scene` and what it asks for (every object's colour and shape; size and position
    when the wording names them; a relation instead of positions for some two-object scenes)."""
    objs = scene.objects
    if not objs:
        raise ValueError("a scene without objects has nothing to paraphrase")
    say_size = bool(rng.random() < 0.5)
    say_pos = bool(rng.random() < 0.6)
    relations: list[tuple[int, str, int]] = []
    if len(objs) == 2 and (objs[0].color, objs[0].shape) != (objs[1].color, objs[1].shape) \
            and rng.random() < 0.5:
        a, b = (objs[0], objs[1]) if rng.random() < 0.5 else (objs[1], objs[0])
        rel = _pick(rng, [r for r in ("left_of", "right_of", "above", "below") if relation_holds(a.cell, r, b.cell)])
        words = {"left_of": "left of", "right_of": "right of", "above": "above", "below": "below"}[rel]
        body = f"{_object_phrase(rng, a, say_size)} {words} {_object_phrase(rng, b, say_size)}"
        requested = [RequestedObject(o.color, o.shape, o.size if say_size else None) for o in (a, b)]
        relations = [(0, rel, 1)]
    else:
        order = [objs[k] for k in rng.permutation(len(objs))]
        parts = []
        for o in order:
            phrase = _object_phrase(rng, o, say_size)
            parts.append(_with_place(rng, phrase, o.cell) if say_pos else phrase)
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        requested = [RequestedObject(o.color, o.shape, o.size if say_size else None, o.cell if say_pos else None)
                     for o in order]
    text = _pick(rng, _LEADS + [""] * 3) + body + _pick(rng, _TAILS)
    return Caption(text, Request(tuple(requested), tuple(relations), None))
