"""The eval job's results as TensorBoard summaries, next to metrics.json: every number as a scalar (tag
`<scale>/<split>/<metric path>`, e.g. `guidance_1.5/validation/compositional/all`) and every grid as an image,
at the evaluated model's training step, so TensorBoard shows the eval beside the training curves of a run."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np

from dalle import paths


def numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(slash-joined path, value) of every finite number in a JSON-like tree (bools and strings left out)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from numbers(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        yield prefix, float(tree)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The per-scale numbers of a metrics.json, tagged by guidance scale."""
    out = {}
    for scale, entry in metrics.get("scales", {}).items():
        for path, value in numbers(entry):
            out[f"guidance_{scale}/{path}"] = value
    return out


def write(out_dir: str, metrics: Mapping[str, Any], step: int = 0) -> str:
    """Writes the summaries under `out_dir/tensorboard`; returns that folder."""
    from clu import metric_writers
    from PIL import Image

    folder = paths.join(out_dir, "tensorboard")
    writer = metric_writers.SummaryWriter(folder)
    try:
        writer.write_scalars(step, scalars(metrics))
        grids = {}
        for path in paths.glob(paths.join(out_dir, "grids"), "*.png"):
            with paths.open_file(path, "rb") as f, Image.open(f) as img:
                grids[f"grids/{paths.basename(path)[:-len('.png')]}"] = np.asarray(img.convert("RGB"))[None]
        if grids:
            writer.write_images(step, grids)
    finally:
        writer.flush()
        writer.close()
    return folder
