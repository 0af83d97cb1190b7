"""The captioned-shapes world: determinism, held-out splits, captions that tell the truth, batches and resume."""

import hashlib
import time

import numpy as np
import pytest

from dalle import config as config_lib
from dalle.data import schema as S
from dalle.data.shapes import (CELL_NAMES, Caption, Request, Scene, ShapeObject, ShapesIterator, ShapesWorld,
                               make_iterator, relation_holds)
from dalle.eval.analyzer import matches

MULTI = dict(image_size=32, min_objects=1, max_objects=3, backgrounds=("black", "white", "gray", "navy"),
             held_out_pairs=("red star", "blue triangle"), held_out_relations=("circle left_of square",
                                                                                "green triangle above star"))


def _has_pair(scene, color, shape):
    return any(o.color == color and o.shape == shape for o in scene.objects)


def _has_relation(scene, a, rel, b):
    """Independent of the world's own check: a = (color|None, shape)."""
    def ok(o, d):
        return o.shape == d[1] and (d[0] is None or o.color == d[0])
    cols = {"left_of": lambda x, y: x.col < y.col, "above": lambda x, y: x.row < y.row}
    return any(ok(x, a) and ok(y, b) and cols[rel](x, y) for x in scene.objects for y in scene.objects if x != y)


def _forbidden(scene):
    return (_has_pair(scene, "red", "star") or _has_pair(scene, "blue", "triangle")
            or _has_relation(scene, (None, "circle"), "left_of", (None, "square"))
            or _has_relation(scene, ("green", "triangle"), "above", (None, "star")))


def test_deterministic_for_a_seed():
    a, b, c = ShapesWorld(**MULTI), ShapesWorld(**MULTI), ShapesWorld(**{**MULTI, "seed": 1})
    for split in ("train", "validation", "zero_shot"):
        for i in (0, 7, 12345):
            ea, eb = a.example(split, i), b.example(split, i)
            assert ea["spec"] == eb["spec"] and ea["caption"] == eb["caption"]
            np.testing.assert_array_equal(ea["image"], eb["image"])
    differ = sum(a.scene("train", i) != c.scene("train", i) for i in range(50))
    assert differ > 40  # another seed is another stream
    assert a.scene("train", 3) != a.scene("validation", 3) or a.scene("train", 4) != a.scene("validation", 4)


def test_scene_json_round_trip():
    w = ShapesWorld(**MULTI)
    for i in range(20):
        s = w.scene("zero_shot", i)
        assert Scene.from_json(s.to_json()) == s
        cap = w.describe(s, np.random.default_rng(i))
        assert Request.from_json(cap.request.to_json()) == cap.request


def test_scenes_respect_the_config():
    w = ShapesWorld(**MULTI)
    seen = {"color": set(), "shape": set(), "size": set(), "cell": set(), "n": set(), "bg": set()}
    for i in range(1500):
        s = w.scene("train", i)
        assert 1 <= len(s.objects) <= 3
        assert len({o.cell for o in s.objects}) == len(s.objects), "one object per cell"
        for o in s.objects:
            dist = np.linalg.norm(np.subtract(S.COLOR_PALETTE[o.color], S.BACKGROUND_PALETTE[s.background]))
            assert dist >= S.MIN_CONTRAST, f"{o.color} on {s.background} is invisible"
            seen["color"].add(o.color), seen["shape"].add(o.shape), seen["size"].add(o.size)
            seen["cell"].add(o.cell)
        seen["n"].add(len(s.objects)), seen["bg"].add(s.background)
    assert seen["color"] == set(w.colors) and seen["shape"] == set(w.shapes) and seen["size"] == set(w.sizes)
    assert seen["cell"] == set(range(9)) and seen["n"] == {1, 2, 3} and seen["bg"] == set(w.backgrounds)
    one = ShapesWorld(image_size=32)
    assert all(len(one.scene("train", i).objects) == 1 for i in range(200))


def test_held_out_combinations_only_in_zero_shot():
    w = ShapesWorld(**MULTI)
    for split, n in (("train", 3000), ("validation", 1000)):
        bad = [i for i in range(n) if _forbidden(w.scene(split, i))]
        assert not bad, f"{split} scenes {bad[:5]} contain a held-out combination"
    tags = set()
    for i in range(400):
        s = w.scene("zero_shot", i)
        assert _forbidden(s), f"zero_shot scene {i} has no held-out combination: {s}"
        assert s.tag and s.tag in w.held_out_in(s)
        tags.add(s.tag)
    assert tags == {"pair:red star", "pair:blue triangle", "relation:circle left_of square",
                    "relation:green triangle above star"}
    # With one object per image relations cannot happen: zero_shot is made of pairs only.
    one = ShapesWorld(image_size=32, held_out_pairs=("red star",), held_out_relations=("circle left_of square",))
    assert {one.scene("zero_shot", i).tag for i in range(50)} == {"pair:red star"}
    with pytest.raises(ValueError, match="zero_shot split is empty"):
        ShapesWorld(image_size=32, held_out_pairs=(), held_out_relations=()).scene("zero_shot", 0)


def test_relations():
    assert relation_holds(0, "left_of", 2) and relation_holds(6, "left_of", 1) and not relation_holds(1, "left_of", 7)
    assert relation_holds(0, "above", 3) and relation_holds(2, "above", 6) and not relation_holds(3, "above", 5)
    assert relation_holds(8, "right_of", 0) and relation_holds(7, "below", 4)
    with pytest.raises(ValueError, match="unknown relation"):
        relation_holds(0, "near", 1)


def test_captions_are_true_and_varied():
    """Every caption's request is satisfied by its own scene; all objects' colors and shapes are said."""
    w = ShapesWorld(**MULTI)
    texts, counted, related, placed = set(), 0, 0, 0
    for i in range(600):
        s = w.scene("train" if i % 2 else "zero_shot", i)
        cap = w.describe(s, w.rng("train", i, stream=1))
        assert isinstance(cap, Caption)
        result = matches(s, cap.request)
        assert result["all"], f"caption {cap.text!r} is not true of {s}: {result}"
        assert len(cap.request.objects) == len(s.objects)
        texts.add(cap.text)
        counted += any(w in cap.text.split() for w in ("two", "three", "2", "3"))
        related += bool(cap.request.relations)
        placed += any(o.cell is not None for o in cap.request.objects)
        if s.tag.startswith("relation:"):  # a held-out relation must be conveyed by the caption
            assert cap.request.relations or all(o.cell is not None for o in cap.request.objects), cap.text
    assert len(texts) > 550 and counted > 20 and related > 30 and placed > 200
    # Same scene, different rngs: different wordings.
    s = Scene((ShapeObject("blue", "square", "small", 0), ShapeObject("yellow", "star", "large", 2)))
    variants = {w.caption(s, np.random.default_rng(k)) for k in range(60)}
    assert len(variants) > 25
    assert any("to the left of" in v or "left of" in v for v in variants)
    assert any(v.startswith("a ") or v.startswith("an ") for v in variants)
    two = Scene((ShapeObject("green", "triangle", "small", 0), ShapeObject("green", "triangle", "small", 4)))
    assert any("two green triangles" in w.caption(two, np.random.default_rng(k)) for k in range(40))
    assert any(name in w.caption(Scene((ShapeObject("red", "circle", "small", 0),)), np.random.default_rng(k))
               for k in range(40) for name in ("top left", "upper left")) and CELL_NAMES[0] == "top left"


def _relation_rate(world: ShapesWorld, n: int = 1500) -> tuple[float, set[int]]:
    """Share of two-object, two-kind train captions that state a relation, and the indices that do."""
    two, related = 0, set()
    for i in range(n):
        s = world.scene("train", i)
        if len(s.objects) == 2 and len({(o.color, o.shape) for o in s.objects}) == 2:
            two += 1
            cap = world.describe(s, world.rng("train", i, stream=1))
            assert matches(s, cap.request)["all"], cap.text
            if cap.request.relations:
                related.add(i)
    return len(related) / two, related


def test_relation_prob_sets_the_share_of_relation_captions():
    rates = {p: _relation_rate(ShapesWorld(**MULTI, relation_prob=p)) for p in (0.0, 0.3, 0.5, 0.9, 1.0)}
    assert rates[0.0][0] == 0.0 and rates[1.0][0] == 1.0
    for p in (0.3, 0.5, 0.9):
        assert abs(rates[p][0] - p) < 0.07, (p, rates[p][0])
    # Up to the share of captions that place their objects, a larger chance only adds relations.
    assert rates[0.3][1] <= rates[0.5][1]
    with pytest.raises(ValueError, match="data.relation_prob = 1.5"):
        ShapesWorld(relation_prob=1.5)


def test_default_captions_are_unchanged():
    """The default world's captions are those its built data sets hold (data changes need a builder version)."""
    w, digest = ShapesWorld(**MULTI), hashlib.sha1()
    for split in ("train", "validation", "zero_shot"):
        for i in range(300):
            e = w.example(split, i)
            digest.update((e["caption"] + e["request"]).encode())
    assert digest.hexdigest() == "c2900da15eb757ccb9da5177415786b2185ab333"


@pytest.mark.parametrize("size", [32, 64, 256])
def test_render(size):
    w = ShapesWorld(image_size=size, max_objects=3, backgrounds=("navy",))
    s = Scene((ShapeObject("red", "square", "large", 0), ShapeObject("white", "circle", "small", 4)), "navy")
    img = w.render(s)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    c = size // 6
    np.testing.assert_array_equal(img[c, c], S.COLOR_PALETTE["red"])  # cell centers are solid
    np.testing.assert_array_equal(img[size // 2, size // 2], S.COLOR_PALETTE["white"])
    np.testing.assert_array_equal(img[size - 1, size - 1], S.BACKGROUND_PALETTE["navy"])  # empty cell
    np.testing.assert_array_equal(img[size // 2, size - 2], S.BACKGROUND_PALETTE["navy"])
    large = (np.abs(img[: size // 3, : size // 3].astype(int) - S.BACKGROUND_PALETTE["navy"]).sum(-1) > 60).mean()
    small = (np.abs(img[size // 3: 2 * size // 3, size // 3: 2 * size // 3].astype(int)
                    - S.BACKGROUND_PALETTE["navy"]).sum(-1) > 60).mean()
    assert 0.45 < large < 0.8 and 0.12 < small < 0.3  # 0.88^2 vs 0.5^2 of a cell, minus antialiased corners


def test_iterator_batches_shards_and_resume():
    w = ShapesWorld(**MULTI)
    it = ShapesIterator(w, "train", batch_size=8)
    b = next(it)
    assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.uint8
    assert b["caption"].dtype == object and isinstance(b["caption"][0], str)
    assert Scene.from_json(b["spec"][3]) == w.scene("train", 3)
    np.testing.assert_array_equal(b["index"], np.arange(8))
    # Shards: two processes' batches put together are the one-process batch.
    full = [next(ShapesIterator(w, "train", 8)) for _ in range(1)][0]
    p0, p1 = ShapesIterator(w, "train", 8, 0, 2), ShapesIterator(w, "train", 8, 1, 2)
    got = np.concatenate([next(p0)["image"], next(p1)["image"]])
    np.testing.assert_array_equal(got, full["image"])
    # Resume: a fresh iterator set to a saved state continues exactly.
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = next(it)
    again = ShapesIterator(ShapesWorld(**MULTI), "train", batch_size=8)
    again.set_state(state)
    nxt = next(again)
    np.testing.assert_array_equal(nxt["image"], expected["image"])
    assert list(nxt["caption"]) == list(expected["caption"])
    with pytest.raises(ValueError, match="seed"):
        ShapesIterator(ShapesWorld(**{**MULTI, "seed": 5}), "train", 8).set_state(state)
    # Finite pass for evaluation: the incomplete last batch is dropped.
    val = ShapesIterator(w, "validation", 4, num_examples=10)
    assert [len(x["index"]) for x in val] == [4, 4]
    with pytest.raises(ValueError, match="process_count"):
        ShapesIterator(w, "train", 6, 0, 4)


def test_make_iterator_from_config_and_speed():
    config = config_lib.load_config("configs/shapes_data.py:one_object_32")
    it = make_iterator(config.data, "train", 256)
    next(it)
    start, n = time.perf_counter(), 0
    while n < 2048:
        n += len(next(it)["image"])
    rate = n / (time.perf_counter() - start)
    print(f"\nrender+caption: {rate:.0f} examples/s at 32 px (one object)")
    assert rate > 800  # thousands/s when the machine is not shared


def test_bad_world_names_the_field():
    with pytest.raises(ValueError, match="data.shapes: unknown name 'blob'"):
        ShapesWorld(shapes=("circle", "blob"))
    with pytest.raises(ValueError, match="data.max_objects"):
        ShapesWorld(max_objects=4)
    with pytest.raises(ValueError, match="data.held_out_relations"):
        ShapesWorld(held_out_relations=("circle near square",))
    with pytest.raises(config_lib.ConfigError, match="data.image_size"):
        config_lib.load_config("configs/shapes_data.py:multi_32", ["--config.data.image_size=16"])
    with pytest.raises(ValueError, match="split 'test'"):
        ShapesWorld().scene("test", 0)
