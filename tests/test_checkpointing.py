"""dalle.train.checkpointing: what a crash mid-save leaves behind is cleared when the run restarts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dalle import config as config_lib
from dalle.train import checkpointing


def test_temp_folders_of_an_interrupted_save_are_removed_on_restart(tmp_path):
    steps = tmp_path / "checkpoints"
    # What a run killed mid-save leaves (no earlier manager here: its own background clean-up would race ours).
    leftover = steps / "7.orbax-checkpoint-tmp-1796100000"
    os.makedirs(leftover / "state")
    ck = checkpointing.Checkpointer(str(tmp_path), async_save=False)
    ck.save(8, {"w": np.zeros(3, np.float32)}, {"step": 8})  # orbax clears them in the background before a save
    ck.wait()
    assert not leftover.exists() and ck.latest_step() == 8
    ck.manager.close()


def test_a_run_saved_before_a_schema_key_existed_still_resumes(tmp_path):
    """A workdir whose config.json predates a schema key (here: a data key, dropped from the saved file) resumes
    when the run leaves that key at its default, and still stops when the key is set to something else."""
    config = config_lib.load_config("configs/shapes_tiny.py:dalle_bart,root=" + str(tmp_path / "r"))
    checkpointing.check_or_write_config(str(tmp_path), config)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["data"]["text_normalizer"], saved["model"]["encoder_layer_norm_eps"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    checkpointing.check_or_write_config(str(tmp_path), config)  # defaults: the same run
    (tmp_path / "config.json").write_text(json.dumps(saved))
    changed = config_lib.load_config("configs/shapes_tiny.py:dalle_bart,root=" + str(tmp_path / "r"),
                                     ["--config.data.text_normalizer=none"])
    with pytest.raises(checkpointing.ResumeError, match="data.text_normalizer"):
        checkpointing.check_or_write_config(str(tmp_path), changed)
