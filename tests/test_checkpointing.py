"""dalle.train.checkpointing: what a crash mid-save leaves behind is cleared when the run restarts."""

from __future__ import annotations

import os

import numpy as np

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
