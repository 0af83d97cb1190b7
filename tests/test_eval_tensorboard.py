"""dalle.eval.tensorboard: a metrics.json and its grids as TensorBoard scalars and images."""

from __future__ import annotations

import glob
import os

import numpy as np
from PIL import Image

from dalle.eval import tensorboard


def test_every_number_becomes_a_scalar_and_every_grid_an_image(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    metrics = {"checkpoint": "x", "scales": {"1.5": {"clip_score": {"all": 25.0}, "fid": float("nan"),
                                                     "splits": {"validation": {"compositional": {"all": 0.9},
                                                                               "prompts": 200, "ok": True}}}}}
    assert tensorboard.scalars(metrics) == {"guidance_1.5/clip_score/all": 25.0,
                                            "guidance_1.5/splits/validation/compositional/all": 0.9,
                                            "guidance_1.5/splits/validation/prompts": 200.0}
    os.makedirs(tmp_path / "grids")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "grids" / "s1.5_validation.png")
    folder = tensorboard.write(str(tmp_path), metrics, step=1500)
    [events] = glob.glob(os.path.join(folder, "events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(events, size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    found = set(tags.get("scalars", [])) | set(tags.get("tensors", [])) | set(tags.get("images", []))
    assert {"guidance_1.5/clip_score/all", "grids/s1.5_validation"} <= found
