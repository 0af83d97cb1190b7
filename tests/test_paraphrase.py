"""Off-grammar captions (dalle/eval/paraphrase.py): varied wordings whose requests match the scenes they describe."""

from __future__ import annotations

import numpy as np
import pytest

from dalle import config as config_lib
from dalle.data.shapes import Scene, ShapeObject, ShapesWorld, relation_holds
from dalle.eval import analyzer, paraphrase


@pytest.fixture(scope="module")
def world():
    return ShapesWorld.from_config(config_lib.load_config("configs/shapes_data.py:multi_32", []).data)


def test_every_wording_occurs_and_requests_fit_the_scene(world):
    texts = []
    for i in range(300):
        scene = world.scene("validation", i)
        cap = paraphrase.paraphrase(scene, np.random.default_rng(i))
        texts.append(cap.text)
        # what the caption asks is true of the scene it describes, and of its rendering read back
        assert analyzer.matches(scene, cap.request)["all"], (cap.text, scene)
        assert len(cap.request.objects) == len(scene.objects)
        for o in cap.request.objects:
            assert o.color in cap.text and o.shape in cap.text
    joined = "\n".join(texts)
    for marker in ("draw ", "please", "that is", "colored", "one ", "top-left", ", ", " shape", " left of ",
                   "near the"):
        assert marker in joined, marker
    # captions without any article exist (a caption the grammar never writes)
    assert any(not t.startswith(("a ", "an ")) and " a " not in t and " an " not in t for t in texts)


def test_position_and_relation_requests():
    scene = Scene((ShapeObject("red", "circle", "small", 0), ShapeObject("blue", "square", "large", 8)))
    with_relation = with_cells = 0
    for seed in range(60):
        cap = paraphrase.paraphrase(scene, np.random.default_rng(seed))
        if cap.request.relations:
            with_relation += 1
            (a, rel, b), = cap.request.relations
            cells = {"red": 0, "blue": 8}
            subject, obj = cap.request.objects[a].color, cap.request.objects[b].color
            assert subject != obj and relation_holds(cells[subject], rel, cells[obj])
        elif any(o.cell is not None for o in cap.request.objects):
            with_cells += 1
            assert {o.cell for o in cap.request.objects} == {0, 8}
    assert with_relation and with_cells


def test_empty_scene_is_refused():
    with pytest.raises(ValueError, match="nothing to paraphrase"):
        paraphrase.paraphrase(Scene(()), np.random.default_rng(0))
