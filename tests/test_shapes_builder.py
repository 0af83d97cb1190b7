"""The `captioned_shapes` tfds builder on small data: splits, features, examples equal to the world's."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

tfds = pytest.importorskip("tensorflow_datasets")

from dalle.data import schema as S  # noqa: E402
from dalle.data.builders.shapes import CaptionedShapes, build_shapes, make_config  # noqa: E402
from dalle.data.shapes import Scene, ShapesWorld  # noqa: E402


def _small_data(**kw):
    d = S.data_defaults()
    d.max_objects = 3
    d.train_size, d.validation_size, d.zero_shot_size = 24, 8, 12
    for k, v in kw.items():
        d[k] = v
    return d


def test_build_small(tmp_path):
    tfds.disable_progress_bar()
    data = _small_data()
    builder = build_shapes(data, str(tmp_path))
    assert builder.name == "captioned_shapes"
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 24, "validation": 8,
                                                                         "zero_shot": 12}
    assert str(tmp_path) in builder.data_dir
    world = ShapesWorld.from_config(data)
    for split in ("train", "zero_shot"):
        rows = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert sorted(int(r["index"]) for r in rows) == list(range(builder.info.splits[split].num_examples))
        for r in rows:
            want = world.example(split, int(r["index"]))
            np.testing.assert_array_equal(r["image"], want["image"])
            assert r["caption"].decode() == want["caption"]
            scene = Scene.from_json(r["spec"].decode())
            assert scene == world.scene(split, int(r["index"]))
            assert bool(world.held_out_in(scene)) == (split == "zero_shot")
            json.loads(r["request"].decode())
    assert builder.info.features["image"].shape == (32, 32, 3)
    assert builder.info.metadata["world"]["max_objects"] == 3
    # A second call reuses the build; another world gets another directory.
    again = build_shapes(data, str(tmp_path))
    assert again.data_dir == builder.data_dir
    other = make_config(_small_data(seed=1))
    assert other.name != builder.builder_config.name
    assert "captioned_shapes" in tfds.list_builders(with_community_datasets=False)
    assert {c.name for c in CaptionedShapes.BUILDER_CONFIGS} >= {"one_object_32", "multi_64"}


def test_config_names_keep_worlds_built_before_later_keys():
    """A key added to the world later (data.relation_prob) names a new dataset only when it is set."""
    assert make_config(_small_data()).name == "s32_o13_329e911a42"  # the name before relation_prob existed
    assert make_config(S.data_defaults()).name == "s32_o11_5dae429e64"
    assert make_config(_small_data(relation_prob=0.9)).name not in ("s32_o13_329e911a42",
                                                                     make_config(_small_data(relation_prob=1.0)).name)
