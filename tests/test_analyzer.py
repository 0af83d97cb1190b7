"""The exact scene analyzer agrees with the stored spec on rendered validation images, and scores requests."""

import numpy as np
import pytest
from scipy import ndimage

from dalle import config as config_lib
from dalle.data.shapes import Request, RequestedObject, Scene, ShapeObject, ShapesWorld
from dalle.eval.analyzer import DetectedObject, analyze, get_analyzer, matches

BACKGROUNDS = ("black", "white", "gray", "navy")


def _agreement(world, n, degrade=None, seed=0):
    rng = np.random.default_rng(seed)
    an = get_analyzer(world)
    results = []
    for i in range(n):
        scene = world.scene("validation", i)
        image = world.render(scene)
        if degrade is not None:
            image = degrade(image, rng)
        results.append(matches(an.analyze_scene(image), scene))
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


@pytest.mark.parametrize("size", [32, 64])
def test_agrees_with_spec_on_clean_validation_renders(size):
    world = ShapesWorld(image_size=size, min_objects=1, max_objects=3, backgrounds=BACKGROUNDS)
    acc = _agreement(world, 500)
    print(f"\n{size} px clean, 1-3 objects, 4 backgrounds: {acc}")
    assert acc["all"] >= 0.99, acc


def test_agrees_on_the_config_variants():
    for variant in ("one_object_32", "all_shapes_64"):
        world = ShapesWorld.from_config(config_lib.load_config(f"configs/shapes_data.py:{variant}").data)
        acc = _agreement(world, 200)
        assert acc["all"] >= 0.99, (variant, acc)


@pytest.mark.parametrize("size", [128, 256])
def test_large_images(size):
    world = ShapesWorld(image_size=size, max_objects=3, backgrounds=BACKGROUNDS)
    acc = _agreement(world, 60)
    assert acc["all"] >= 0.98, acc


def _blur_noise(sigma, noise):
    def f(image, rng):
        x = ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
        x = x + rng.normal(0.0, noise, x.shape)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return f


def _gain(image, rng):
    x = image.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15, 3)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [32, 64])
def test_degraded_renders(size):
    """Reported, with a loose bound: what VQGAN round trips and samples look like (blur, noise, color drift)."""
    world = ShapesWorld(image_size=size, max_objects=3, backgrounds=BACKGROUNDS)
    k = size / 32
    blurred = _agreement(world, 200, _blur_noise(0.7 * k, 8.0))
    drift = _agreement(world, 200, _gain)
    shifted = _agreement(world, 100, lambda im, rng: np.roll(im, (1, -1), (0, 1)))
    print(f"\n{size} px blur {0.7 * k:.1f}px + noise 8: {blurred['all']:.3f}; gain/offset drift: {drift['all']:.3f}; "
          f"1 px shift: {shifted['all']:.3f}")
    assert blurred["all"] >= 0.9 and drift["all"] >= 0.9 and shifted["all"] >= 0.9


def test_reads_exact_attributes():
    world = ShapesWorld(image_size=32, max_objects=3)
    scene = Scene((ShapeObject("yellow", "star", "large", 1), ShapeObject("cyan", "cross", "small", 6),
                   ShapeObject("purple", "triangle", "small", 8)), "black")
    found = analyze(world.render(scene), world)
    assert [(o.color, o.shape, o.size, o.cell) for o in found] == [
        ("yellow", "star", "large", 1), ("cyan", "cross", "small", 6), ("purple", "triangle", "small", 8)]
    assert all(o.fit < 1e-3 for o in found)
    assert analyze(np.zeros((32, 32, 3), np.uint8), world) == []
    # A config section works as well as a world, and the image size may differ from the world's.
    big = world.__class__(image_size=96, max_objects=3)
    assert [(o.shape, o.cell) for o in analyze(big.render(scene), dict(world.config_dict()))] == \
        [("star", 1), ("cross", 6), ("triangle", 8)]
    with pytest.raises(ValueError, match="image must be"):
        analyze(np.zeros((32, 32), np.uint8), world)


def test_matches_per_attribute():
    scene = Scene((ShapeObject("red", "circle", "small", 0), ShapeObject("blue", "square", "large", 2)))
    det = [DetectedObject("blue", "square", "large", 2), DetectedObject("red", "circle", "small", 0)]
    assert all(matches(det, scene).values())
    wrong_color = [DetectedObject("green", "square", "large", 2), det[1]]
    r = matches(wrong_color, scene)
    assert not r["color"] and not r["all"] and r["shape"] and r["size"] and r["position"] and r["count"]
    wrong_cell = [DetectedObject("blue", "square", "large", 5), det[1]]
    r = matches(wrong_cell, scene)
    assert not r["position"] and not r["all"] and r["color"] and r["shape"]
    r = matches(det[:1], scene)
    assert not r["count"] and not r["all"]
    extra = det + [DetectedObject("white", "star", "small", 4)]
    r = matches(extra, scene)
    assert not r["count"] and not r["all"] and r["color"] and r["shape"]
    # Requests: None attributes match anything; relations are part of position.
    req = Request((RequestedObject("red", "circle"), RequestedObject("blue", "square")), ((0, "left_of", 1),))
    assert matches(det, req)["all"]
    flipped = [DetectedObject("blue", "square", "large", 0), DetectedObject("red", "circle", "small", 2)]
    r = matches(flipped, req)
    assert not r["position"] and not r["all"] and r["color"] and r["shape"] and r["size"]
    r = matches(det, Request(req.objects, background="white"), detected_background="black")
    assert not r["background"] and not r["all"]
    # The same color+shape twice: the assignment must be one-to-one.
    two = Request((RequestedObject("red", "circle", "small"), RequestedObject("red", "circle", "large")))
    r = matches([DetectedObject("red", "circle", "small", 0), DetectedObject("red", "circle", "small", 4)], two)
    assert not r["size"] and r["color"] and not r["all"]
