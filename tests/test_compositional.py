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


def test_prompt_kinds_and_breakdown():
    data = _data("multi_32")
    prompts = [p for split in ("validation", "zero_shot") for p in compositional.shapes_prompts(data, split, 60)]
    kinds = [compositional.prompt_kinds(p.request, p.scene) for p in prompts]
    for p, ks in zip(prompts, kinds):
        assert f"objects:{len(p.request.objects)}" in ks
        assert all(f"relation:{r}" in ks for _, r, _ in p.request.relations)
        assert ("background" in ks) == (p.request.background is not None)
        assert any(k.startswith("held_out:") for k in ks) == (p.split == "zero_shot")
    seen = {k for ks in kinds for k in ks}
    assert {"objects:1", "objects:2", "objects:3", "count"} <= seen
    assert any(k.startswith("relation:") for k in seen)
    # Right images for the first half, blanks for the rest: the breakdown counts each group's own outcomes.
    images = compositional.render_prompts(data, prompts)
    half = len(prompts) // 2
    images[half:] = 0
    result = compositional.accuracy(images, [p.request for p in prompts], data, kinds)
    assert result["all"] == pytest.approx(half / len(prompts))
    assert result["stderr"] == pytest.approx(np.sqrt(0.25 / len(prompts)))
    for kind, entry in result["by_kind"].items():
        members = [i for i, ks in enumerate(kinds) if kind in ks]
        assert entry["images"] == len(members)
        assert entry["all"] == pytest.approx(np.mean([i < half for i in members]))


def test_paraphrase_split_uses_validation_scenes_with_other_captions():
    data = _data("one_object_32")
    para = compositional.shapes_prompts(data, "paraphrase", 40)
    grammar = compositional.shapes_prompts(data, "validation", 40)
    assert [p.scene for p in para] == [p.scene for p in grammar]
    assert all(a.caption != b.caption for a, b in zip(para, grammar))
    # the rendered scenes satisfy what the paraphrases ask
    images = compositional.render_prompts(data, para)
    assert compositional.accuracy(images, [p.request for p in para], data)["all"] == 1.0


def test_relations_split_holds_validation_scenes_whose_caption_states_a_relation():
    data = _data("multi_32")
    rel = compositional.shapes_prompts(data, "relations", 12)
    assert len(rel) == 12 and all(p.split == "relations" and p.request.relations for p in rel)
    indices = [p.index for p in rel]
    assert indices == sorted(set(indices))
    # the same scenes and captions as the validation split at those indices, and none skipped in between
    grammar = compositional.shapes_prompts(data, "validation", indices[-1] + 1)
    assert [(p.scene, p.caption) for p in rel] == [(grammar[i].scene, grammar[i].caption) for i in indices]
    assert sum(bool(p.request.relations) for p in grammar) == 12
    images = compositional.render_prompts(data, rel)
    assert compositional.accuracy(images, [p.request for p in rel], data)["all"] == 1.0
    kinds = {k for p in rel for k in compositional.prompt_kinds(p.request, p.scene)}
    assert any(k.startswith("relation:") for k in kinds)


def test_relations_split_refuses_a_one_object_world():
    with pytest.raises(ValueError, match="max_objects must be at least 2"):
        compositional.shapes_prompts(_data("one_object_32"), "relations", 4)


def test_multi_eval_variant_adds_the_relations_split():
    assert config_lib.load_config("configs/eval/shapes.py:multi", []).eval.splits[-1] == "relations"
    assert "relations" not in config_lib.load_config("configs/eval/shapes.py", []).eval.splits


def test_held_out_drawn_names_what_was_drawn_in_the_pairs_cell():
    data = _data("one_object_32")
    prompts = compositional.shapes_prompts(data, "zero_shot", 12)
    images = compositional.render_prompts(data, prompts)
    drawn = compositional.held_out_drawn(images, prompts, data)
    assert sum(sum(c.values()) for c in drawn.values()) == 12
    for pair, counts in drawn.items():
        assert counts == {pair: sum(counts.values())}  # the renders show exactly the held-out pair
    blank = compositional.held_out_drawn(np.zeros_like(images)[:, None], prompts, data)
    assert all(list(c) == ["nothing"] for c in blank.values())
