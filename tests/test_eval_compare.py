"""`dalle eval compare` (dalle/eval/compare.py): methods measured side by side by the eval job, with stand-in
methods whose accuracy is known (exact renders of each prompt's scene, and empty pictures)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.data import shapes
from dalle.eval import compare, compositional


def _data() -> ConfigDict:
    return config_lib.load_config("configs/shapes_data.py:one_object_32", []).data


def _builder(kind: str):
    def build(entry, ev, mesh):
        data = _data()
        world = shapes.ShapesWorld.from_config(data)
        scenes = {}
        for split in ("validation", "zero_shot"):
            scenes.update({p.caption: p.scene for p in compositional.shapes_prompts(data, split, 4)})

        def fn(captions, scale, rng):
            if kind == "render":
                return np.stack([world.render(scenes[c]) for c in captions])
            return np.zeros((len(captions), 32, 32, 3), np.uint8)

        return compare.TimedGenerator(fn, data, compare._one_sample(ev))

    return build


@pytest.fixture
def fake_methods(monkeypatch):
    monkeypatch.setitem(compare.METHODS, "render", (_builder("render"), ()))
    monkeypatch.setitem(compare.METHODS, "blank", (_builder("blank"), ("clip",)))


def _config(tmp_path, methods) -> ConfigDict:
    return config_lib.load_config("configs/eval/compare_shapes.py:root=" + str(tmp_path), [
        "--config.eval.clip_checkpoint=", "--config.eval.num_prompts=4", "--config.eval.splits=('validation','zero_shot')",
        "--config.eval.progress_bar=false", f"--config.compare.methods={methods!r}"])


def test_methods_are_measured_on_the_same_prompts(fake_methods, tmp_path):
    config = _config(tmp_path, ({"name": "exact renders", "method": "render", "workdir": ""},
                                {"name": "empty", "method": "blank", "clip": "/nowhere", "workdir": ""}))
    report = compare.run(config)
    rows = {r["name"]: r for r in report["methods"]}
    for split in ("validation", "zero_shot"):
        assert rows["exact renders"]["splits"][split]["all"] == 1.0
        assert rows["empty"]["splits"][split]["all"] == 0.0
        assert rows["exact renders"]["splits"][split]["images"] == 4
    for row in rows.values():
        assert row["seconds_per_image"] is not None and row["seconds_per_image"] >= 0
        assert row["training_minutes"] is None and row["clip_self_scored"] is False
    written = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert [r["name"] for r in written["methods"]] == ["exact renders", "empty"]
    assert (tmp_path / "compare" / "exact_renders" / "metrics.json").exists()


def test_timing_leaves_out_the_compiling_first_call():
    timed = compare.TimedGenerator(lambda c, s, r: np.zeros((len(c), 2, 2, 3), np.uint8), None)
    assert timed.seconds_per_image() is None
    timed.calls = [(10.0, 2), (1.0, 4), (3.0, 4)]
    assert timed.seconds_per_image() == pytest.approx(0.5)
    timed.calls = [(10.0, 2)]
    assert timed.seconds_per_image() == pytest.approx(5.0)


def test_bad_method_lists_are_refused_by_entry():
    errors = compare.check_methods([{"name": "a", "method": "autoregressive"},
                                    {"name": "a", "method": "gan", "checkpoint": "x"},
                                    {"method": "clip-guided", "vqgan": "v", "clip": "c", "data_from": "d"},
                                    {"name": "b", "method": "diffusion"}])
    assert "compare.methods[0] (autoregressive) needs checkpoint" in errors
    assert "compare.methods[1].name = 'a' is used twice" in errors
    assert "compare.methods[2] needs a name (the table's row label)" in errors
    assert any(e.startswith("compare.methods[3].method = 'diffusion' is not one of") for e in errors)


def test_the_shipped_config_names_every_method():
    config = config_lib.load_config("configs/eval/compare_shapes.py:root=/r", [])
    assert [m["method"] for m in config.compare.methods] == ["autoregressive", "clip-guided", "gan"]
    assert config.compare.methods[1]["clip"] == config.eval.clip_checkpoint == "/r/clip/model"  # self-scored


def test_dalle_eval_compare_is_a_subcommand(capsys):
    from dalle import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "compare", "--help"])
    assert e.value.code == 0 and "dalle eval compare" in capsys.readouterr().out
    assert cli.main(["eval", "compare", "--config", "configs/eval/shapes.py"]) == 2
    assert "has no compare and eval sections" in capsys.readouterr().err
