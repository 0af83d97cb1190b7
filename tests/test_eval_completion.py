"""Image completion on the shapes world (dalle/eval/completion.py): which prompts it can test, how the kept and
drawn objects are judged, and the eval job's `eval.completion` entry and grids, with stand-in generators whose
answers are known."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import sampling_schema
from dalle.data import shapes
from dalle.eval import compositional, completion
from dalle.eval import main as eval_main
from tests import data_helpers


def _multi_data() -> ConfigDict:
    return config_lib.load_config("configs/shapes_data.py:multi_32", []).data


class _Completer:
    """Stands in for dalle.generation.Generator. With an image prompt it draws `mode`: "perfect" (the whole scene
    the caption came from), "drop_kept" (the scene without its top-row objects) or "drop_drawn" (only the top-row
    objects); without one, an empty background."""

    def __init__(self, data: ConfigDict, prompts, mode: str = "perfect"):
        self.world = shapes.ShapesWorld.from_config(data)
        self.scenes = {p.caption: p.scene for p in prompts}
        self.mode = mode
        self.vqgan = types.SimpleNamespace(tokens_per_side=8, image_size=32)
        self.calls: list[dict] = []

    def completion_prompt(self, image, keep_rows):
        return data_helpers.fake_encoder(np.asarray(image)[None]).reshape(-1)[: keep_rows * 8]

    def images(self, captions, image_prompt=None, **kw):
        self.calls.append({"captions": list(captions), "image_prompt": image_prompt, **kw})
        out = []
        for c in captions:
            scene = self.scenes[c]
            if image_prompt is None:
                out.append(self.world.render(shapes.Scene((), scene.background)))
                continue
            kept, drawn = completion.split_objects(scene)
            objects = {"perfect": scene.objects, "drop_kept": tuple(drawn), "drop_drawn": tuple(kept)}[self.mode]
            out.append(self.world.render(shapes.Scene(tuple(objects), scene.background)))
        return np.stack(out)


def _prompts(data, n=24):
    return compositional.shapes_prompts(data, "validation", n) + compositional.shapes_prompts(data, "zero_shot", 8)


def test_default_rows_lie_inside_the_grids_top_row():
    assert completion.default_keep_rows(32, 8) == 2  # the top row ends at pixel 11: two 4-px code rows
    assert completion.default_keep_rows(64, 16) == 5  # ends at 21: five
    assert completion.default_keep_rows(32, 32) == 11
    assert completion.default_keep_rows(32, 2) == 1  # never zero


def test_only_scenes_with_objects_above_and_below_are_tested():
    data = _multi_data()
    prompts = _prompts(data)
    chosen = completion.eligible(prompts)
    assert chosen and len(chosen) < len(prompts)
    for p in prompts:
        rows = {o.row for o in p.scene.objects}
        assert (p in chosen) == (0 in rows and bool(rows - {0}))


@pytest.mark.parametrize("mode, kept, caption", [("perfect", 1.0, 1.0), ("drop_kept", 0.0, 0.0),
                                                 ("drop_drawn", 1.0, 0.0)])
def test_kept_and_drawn_objects_are_judged_separately(mode, kept, caption):
    data = _multi_data()
    prompts = _prompts(data)
    gen = _Completer(data, prompts, mode)
    out = completion.measure(gen, data, prompts, scale=2.0, seed=5, batch_size=4, sampler={"top_k": 8})
    assert out["keep_rows"] == 2 and out["code_rows"] == 8 and out["scale"] == 2.0
    assert set(out["splits"]) <= {"validation", "zero_shot"} and out["splits"]
    for entry in out["splits"].values():
        assert entry["kept"][0] == kept and entry["caption"][0] == caption
        assert entry["both"][0] == min(kept, caption)
        assert entry["caption_without_image"][0] == 0.0  # an empty picture satisfies no caption
    total = sum(e["prompts"] for e in out["splits"].values())
    assert total == len(completion.eligible(prompts)) == len(out["_images"]["completed"])
    # Each batch was sampled twice with the same seed and settings: with its image prompt and without.
    with_prompt = [c for c in gen.calls if c["image_prompt"] is not None]
    assert len(with_prompt) == len(gen.calls) // 2 and with_prompt[0]["image_prompt"].shape[1] == 2 * 8
    assert all(c["seed"] == 5 + i // 2 and c["condition_scale"] == 2.0 and c["top_k"] == 8
               for i, c in enumerate(gen.calls))


def test_a_one_object_world_has_nothing_to_complete():
    data = config_lib.load_config("configs/shapes_data.py:one_object_32", []).data
    prompts = compositional.shapes_prompts(data, "validation", 8)
    out = completion.measure(_Completer(data, prompts), data, prompts, scale=1.0)
    assert out["splits"] == {} and "one-object" in out["why"]


def test_the_eval_job_reports_completion_at_its_best_scale(tmp_path):
    data = _multi_data()
    cfg = config_lib.load_config("configs/eval/shapes.py:quick", [
        "--config.eval.clip_checkpoint=", "--config.eval.num_prompts=12", "--config.eval.splits=('validation',)",
        "--config.eval.condition_scales=(1.0,)", "--config.eval.completion=true", "--config.eval.metrics=()",
        "--config.eval.progress_bar=false", f"--config.eval.output_dir={tmp_path / 'out'}",
        "--config.eval.save_images=false", "--config.eval.write_sampling=false"])
    prompts = compositional.shapes_prompts(data, "validation", 12)

    class Job:  # eval_main.Generator's shape: __call__ for the sweep, .gen for completion
        def __init__(self):
            self.data, self.gen = data, _Completer(data, prompts)
            self.settings = sampling_schema.resolve(ConfigDict({"sampling": {"candidates": 1, "top_k": 4}}))

        def __call__(self, captions, scale, rng):
            return self.gen.images(captions)

    res = eval_main.run(cfg, str(tmp_path), generator=Job())
    entry = res["completion"]
    assert entry["splits"]["validation"]["kept"][0] == 1.0 and entry["scale"] == 1.0
    assert "_images" not in entry
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())["completion"]
    assert written["splits"]["validation"]["prompts"] == entry["splits"]["validation"]["prompts"] > 0
    grid = tmp_path / "out" / "grids" / "completion_validation.png"
    assert grid.exists()


def test_completion_rows_are_checked():
    with pytest.raises(ValueError, match="eval.completion_rows = -1 must be a whole number >= 0"):
        config_lib.load_config("configs/eval/shapes.py", ["--config.eval.completion_rows=-1"])
