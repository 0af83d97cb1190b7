"""`captioned_shapes`: the procedural shapes world (dalle/data/shapes.py) as a TensorFlow Datasets builder.

Every example is re-made from (world config, split, index), so the build is a pure function of the config; the
config name carries a hash of the world, so different worlds never share a directory under `data_dir`.
Features: image uint8 [S, S, 3], caption, spec (Scene JSON), request (the caption's Request JSON), index.

    builder = build_shapes(config.data, "/tmp/tfds")   # builds once, then reuses
    ds = builder.as_dataset(split="zero_shot")
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from dalle.data import schema as S  # noqa: E402
from dalle.data.shapes import SPLITS, ShapesWorld  # noqa: E402

_SPLIT_KEYS = {"train": "train_size", "validation": "validation_size", "zero_shot": "zero_shot_size"}
_LATER_KEYS = ("relation_prob",)


class CaptionedShapesConfig(tfds.core.BuilderConfig):
    """One world (ShapesWorld.config_dict()) and the number of examples per split."""

    def __init__(self, *, world: Mapping[str, Any], split_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.world = dict(world)
        self.split_sizes = {s: int(split_sizes[s]) for s in SPLITS}


def make_config(data: Mapping[str, Any], name: str | None = None) -> CaptionedShapesConfig:
    """Builder config for a `data` config section; the default name encodes the image size, object count and
    a hash of everything else, so two different worlds cannot collide in one data_dir."""
    world = ShapesWorld.from_config(data).config_dict()
    defaults = S.data_defaults()
    sizes = {s: int(data[k] if k in data else defaults[k]) for s, k in _SPLIT_KEYS.items()}
    # Keys added to the world after its first release enter the hash only when set, so that a world built before
    # them keeps its name (and its built data) when they are at their defaults, which reproduce it exactly.
    hashed = {k: v for k, v in world.items() if not (k in _LATER_KEYS and v == defaults[k])}
    digest = hashlib.sha1(json.dumps([hashed, sizes], sort_keys=True).encode()).hexdigest()[:10]
    if name is None:
        name = f"s{world['image_size']}_o{world['min_objects']}{world['max_objects']}_{digest}"
    desc = (f"{world['image_size']} px, {world['min_objects']}-{world['max_objects']} objects, "
            f"splits {sizes}, world {digest}")
    return CaptionedShapesConfig(name=name, description=desc, world=world, split_sizes=sizes)


def _variant(image_size: int, max_objects: int, name: str) -> CaptionedShapesConfig:
    d = S.data_defaults()
    d.image_size, d.max_objects = image_size, max_objects
    return make_config(d, name)


class CaptionedShapes(tfds.core.GeneratorBasedBuilder):
    """Captioned procedural shapes (1-3 objects on a 3x3 grid) with held-out combinations in `zero_shot`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [_variant(32, 1, "one_object_32"), _variant(32, 3, "multi_32"),
                       _variant(64, 1, "one_object_64"), _variant(64, 3, "multi_64")]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.world["image_size"]
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "caption": tfds.features.Text(),
                "spec": tfds.features.Text(),
                "request": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int64),
            }),
            metadata=tfds.core.MetadataDict(world=self.builder_config.world,
                                            split_sizes=self.builder_config.split_sizes),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # procedural: nothing to download
        return {split: self._generate_examples(split, n)
                for split, n in self.builder_config.split_sizes.items() if n > 0}

    def _generate_examples(self, split: str, n: int):
        world = ShapesWorld(**self.builder_config.world)
        for index in range(n):
            yield index, world.example(split, index)


def build_shapes(data: Mapping[str, Any], data_dir: str | None = None) -> CaptionedShapes:
    """Builds (or reuses) the `captioned_shapes` dataset of a `data` config section under `data_dir`.

    `data_dir` None uses data.data_dir, then the tfds default. Returns the prepared builder:
    `builder.as_dataset(split=...)`, `builder.info.splits[...]`."""
    if data_dir is None:
        data_dir = (data["data_dir"] if "data_dir" in data else "") or None
    builder = CaptionedShapes(config=make_config(data), data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False,
                                                     compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return builder
