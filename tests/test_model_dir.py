"""dalle.model_dir: exports that never lose the previous model, whatever point a crash cuts them at."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import model_dir


def _config(tag: str) -> ConfigDict:
    return ConfigDict({"model": {"kind": "toy", "tag": tag}})


def _params(value: float) -> dict:
    return {"layer": {"w": np.full((2, 3), value, np.float32)}}


def _saved(directory) -> tuple[str, float]:
    config, params = model_dir.load_model(str(directory))
    return config.model.tag, float(np.asarray(params["layer"]["w"])[0, 0])


def test_reexport_replaces_params_and_config_and_keeps_other_files(tmp_path):
    d = tmp_path / "model"
    model_dir.save_model(str(d), _params(1.0), _config("old"))
    (d / "tokenizer.model").write_text("kept")
    model_dir.save_model(str(d), _params(2.0), _config("new"))
    assert _saved(d) == ("new", 2.0)
    assert (d / "tokenizer.model").read_text() == "kept"
    assert sorted(os.listdir(d)) == ["config.json", "params", "tokenizer.model"]


def test_a_crash_while_writing_the_new_params_keeps_the_old_model(tmp_path, monkeypatch):
    d = tmp_path / "model"
    model_dir.save_model(str(d), _params(1.0), _config("old"))

    class Crash(RuntimeError):
        pass

    real_save = model_dir.ocp.StandardCheckpointer.save

    def dying_save(self, path, *args, **kwargs):  # a save replaces its target, then dies half-way through
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        raise Crash("killed mid-save")

    monkeypatch.setattr(model_dir.ocp.StandardCheckpointer, "save", dying_save)
    with pytest.raises(Crash):
        model_dir.save_model(str(d), _params(2.0), _config("new"))
    assert _saved(d) == ("old", 1.0)
    monkeypatch.setattr(model_dir.ocp.StandardCheckpointer, "save", real_save)
    model_dir.save_model(str(d), _params(3.0), _config("newer"))  # the leftover partial folder is cleared
    assert _saved(d) == ("newer", 3.0) and sorted(os.listdir(d)) == ["config.json", "params"]


def test_a_crash_between_the_renames_is_recovered(tmp_path):
    d = tmp_path / "model"
    model_dir.save_model(str(d), _params(1.0), _config("old"))
    os.replace(d / "params", d / "params.old")  # the export died right after moving the old params aside
    assert _saved(d) == ("old", 1.0)  # readers use the old params with the old config
    assert model_dir.recover_interrupted_export(str(d))
    assert sorted(os.listdir(d)) == ["config.json", "params"] and _saved(d) == ("old", 1.0)
