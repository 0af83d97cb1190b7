"""Compositional accuracy: rendered scenes (not generated) score 1 on every split; wrong images do not."""

from __future__ import annotations

import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.eval import compositional


def _data(variant: str) -> ConfigDict:
    return config_lib.load_config(f"configs/shapes_data.py:{variant}", []).data


@pytest.mark.parametrize("variant", ["one_object_32", "multi_32"])
def test_rendered_scenes_score_one(variant):
    data = _data(variant)
    for split in ("train", "validation", "zero_shot"):
        prompts = compositional.shapes_prompts(data, split, 12)
        images = compositional.render_prompts(data, prompts)
        result = compositional.accuracy(images, [p.request for p in prompts], data)
        assert result["images"] == 12
        for attr in compositional.ATTRIBUTES:
            assert result[attr] == 1.0, (split, attr, result)


def test_wrong_images_are_caught_per_attribute():
    data = _data("one_object_32")
    prompts = compositional.shapes_prompts(data, "validation", 8)
    images = compositional.render_prompts(data, prompts)
    shifted = [p.request for p in prompts[1:]] + [prompts[0].request]  # each image judged against another caption
    wrong = compositional.accuracy(images, shifted, data)
    assert wrong["all"] < 0.5
    blank = compositional.accuracy(np.zeros_like(images), [p.request for p in prompts], data)
    assert blank["count"] == 0.0 and blank["all"] == 0.0
    # requests as JSON (the shapes iterator's "request" field) are accepted
    as_json = compositional.accuracy(images, [p.request.to_json() for p in prompts], data)
    assert as_json["all"] == 1.0


def test_zero_shot_prompts_hold_out_combinations():
    data = _data("one_object_32")
    held = set(data.held_out_pairs)
    for p in compositional.shapes_prompts(data, "zero_shot", 10):
        assert any(f"{o.color} {o.shape}" in held for o in p.scene.objects)
    for p in compositional.shapes_prompts(data, "train", 30):
        assert not any(f"{o.color} {o.shape}" in held for o in p.scene.objects)


def test_empty_summary_reports_none():
    s = compositional.summarize([])
    assert s["images"] == 0 and s["all"] is None
