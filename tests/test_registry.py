"""dalle/registry.py and its extension points: a toy data source and a toy eval metric registered from this file
alone run through `dalle data` and `dalle eval`, which proves that adding one is one module plus its config."""

from __future__ import annotations

import functools
import io
import json
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from dalle import config as config_lib
from dalle import registry


# ================================================================================================================
# The Registry class
# ================================================================================================================
def test_register_get_and_decorator():
    things = registry.Registry("thing")
    things.register("a", 1)

    @things.register("double")
    def double(x):
        return 2 * x

    assert things.get("a") == 1 and things.get("double") is double and double(3) == 6
    assert things.names() == ["a", "double"] and list(things) == ["a", "double"]
    assert "a" in things and "b" not in things
    things.unregister("a")
    assert "a" not in things


def test_duplicate_names_are_an_error_unless_replaced():
    things = registry.Registry("thing")
    entry = object()
    things.register("a", entry)
    things.register("a", entry)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a", object())
    other = object()
    things.register("a", other, replace=True)
    assert things.get("a") is other


def test_unknown_name_lists_the_known_ones():
    things = registry.Registry("widget (config.widget)")
    things.register("b", 2)
    things.register("a", 1)
    with pytest.raises(registry.UnknownNameError) as e:
        things.get("c")
    assert str(e.value) == "widget (config.widget) 'c' is not registered (known: a, b)"
    assert isinstance(e.value, KeyError)


def test_discovery_imports_the_public_modules_of_the_packages(tmp_path, monkeypatch):
    pkg = tmp_path / "dalle_registry_test_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "holder.py").write_text("from dalle import registry\nTHINGS = registry.Registry('thing', "
                                   "('dalle_registry_test_plugins',))\n")
    (pkg / "one.py").write_text("from dalle_registry_test_plugins.holder import THINGS\nTHINGS.register('one', 1)\n")
    (pkg / "two.py").write_text("from dalle_registry_test_plugins.holder import THINGS\nTHINGS.register('two', 2)\n")
    (pkg / "_private.py").write_text("raise AssertionError('private modules are not discovered')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("dalle_registry_test_plugins")]:
        monkeypatch.delitem(sys.modules, name)
    from dalle_registry_test_plugins.holder import THINGS

    assert "dalle_registry_test_plugins.one" not in sys.modules  # nothing imported until a name is missing
    assert THINGS.get("two") == 2
    assert THINGS.names() == ["one", "two"]
    with pytest.raises(registry.UnknownNameError, match=r"known: one, two"):
        THINGS.get("three")


def test_resolve_imports_module_attributes_lazily():
    assert registry.resolve("dalle.registry:Registry.register") is registry.Registry.register
    assert registry.resolve(len) is len  # not a string: returned as is
    with pytest.raises(ValueError, match="module:attribute"):
        registry.resolve("dalle.registry.Registry")


# ================================================================================================================
# Data sources (dalle/data/sources): a toy source, an .npz of images and captions, registered here only
# ================================================================================================================
@functools.cache
def _toy_builder_class():
    """A real-data tfds builder (dalle.data.builders._real) reading data.path = an .npz with `images` uint8
    [N, H, W, 3] and `captions`; defined lazily, since tensorflow_datasets is heavy to import."""
    from dalle.data.builders._real import RealDataBuilder

    class ToyNpz(RealDataBuilder, skip_registration=True):
        """Toy .npz of images and captions."""

        name = "toy_npz"

        def _iter_raw(self):
            with np.load(self.source_path) as f:
                images, captions = f["images"], f["captions"]
            for i, (image, caption) in enumerate(zip(images, captions)):
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, format="PNG")
                yield f"{i:04d}", buf.getvalue(), str(caption)

    return ToyNpz


def _toy_check(d: ConfigDict):
    if d.path and not str(d.path).endswith(".npz"):
        yield f"data.path = {d.path!r}: the toy_npz source reads an .npz file"


@pytest.fixture
def toy_source():
    from dalle.data import sources

    source = sources.register_data_source(sources.DataSource(
        name="toy_npz",
        description="an .npz of images and captions (test only)",
        builder=lambda data: _toy_builder_class().from_data_config(data),
        tfds_name="toy_npz",
        build_needs=("path",),
        check=_toy_check,
    ), replace=True)
    yield source
    registry.DATA_SOURCES.unregister("toy_npz")


COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 230)}


def _write_npz(path) -> None:
    images = np.stack([np.broadcast_to(np.asarray(c, np.uint8), (16, 16, 3)) for c in COLORS.values()])
    np.savez(path, images=images, captions=np.array([f"a {name} square" for name in COLORS]))


def _data(**kw) -> ConfigDict:
    return config_lib.validate(ConfigDict({"data": {"image_size": 16, "min_image_side": 8,
                                                    "validation_fraction": 0.0, **kw}})).data


def test_toy_source_validates_builds_and_reads(toy_source, tmp_path):
    from dalle.data import build

    src = tmp_path / "toy.npz"
    _write_npz(src)
    with pytest.raises(config_lib.ConfigError, match="the toy_npz source reads an .npz file"):
        _data(source="toy_npz", path=str(tmp_path / "toy.csv"))
    with pytest.raises(ValueError, match="building needs data.path"):
        build.build_dataset(_data(source="toy_npz", data_dir=str(tmp_path / "tfds")))
    dc = _data(source="toy_npz", path=str(src), data_dir=str(tmp_path / "tfds"))
    assert build.builder_name(dc) == "toy_npz"
    with pytest.raises(FileNotFoundError, match="toy_npz.*dalle data"):
        build.load_builder(dc)
    result = build.build_dataset(dc)
    assert result["examples"] == 3 and result["splits"] == {"train": 3}
    assert build.build_dataset(dc)["already_built"] is True

    import tensorflow_datasets as tfds

    builder = build.load_builder(dc)
    got = {ex["caption"].decode(): ex["image"] for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
    assert sorted(got) == sorted(f"a {name} square" for name in COLORS)
    for name, color in COLORS.items():
        np.testing.assert_array_equal(got[f"a {name} square"], np.broadcast_to(np.asarray(color, np.uint8),
                                                                                (16, 16, 3)))


def test_toy_source_through_the_dalle_data_command(toy_source, tmp_path, capsys):
    from dalle.data import build

    src = tmp_path / "toy.npz"
    _write_npz(src)
    cfg = tmp_path / "cfg.py"
    cfg.write_text("from ml_collections import ConfigDict\n"
                   "def get_config(arg=None):\n"
                   "    return ConfigDict({'data': {'source': 'toy_npz', 'image_size': 16}})\n")
    rc = build.main(["--config", str(cfg), f"--config.data.path={src}", f"--config.data.data_dir={tmp_path}/t",
                     "--config.data.validation_fraction=0.0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out[out.index("{\n"):])["examples"] == 3


def test_unknown_data_source_lists_the_known_ones():
    with pytest.raises(config_lib.ConfigError) as e:
        _data(source="nope")
    msg = str(e.value)
    assert "data.source = 'nope' is not a registered data source" in msg
    assert "known: cc_tsv, csv, emoji, encoded, folder, parquet, shapes, webdataset, yfcc100m" in msg


def test_builtin_sources_know_what_they_need():
    from dalle.data import build, sources

    assert set(sources.buildable()) >= {"shapes", "folder", "csv", "webdataset", "parquet", "cc_tsv"}
    assert not sources.get("encoded").is_tfds
    assert sources.get("cc_tsv").build_needs == ("path", "images_dir")
    with pytest.raises(config_lib.ConfigError, match="needs data.encoded_dir"):
        _data(source="encoded")
    with pytest.raises(ValueError, match="cannot be built by `dalle data`"):
        build.build_dataset(_data(source="encoded", encoded_dir="/nonexistent"))


# ================================================================================================================
# Eval metrics (dalle/eval/metrics): a toy metric, the mean pixel value, registered here only
# ================================================================================================================
def _brightness(ctx, images, prompts):
    return {"value": float(np.mean(images)), "images": int(images.shape[0] * images.shape[1]),
            "prompts": [p.caption for p in prompts], "scale": ctx.scale}


@pytest.fixture
def toy_metric():
    from dalle.eval import metrics

    metric = metrics.register_metric(metrics.Metric(
        name="toy_brightness", description="mean pixel value of the kept images (test only)",
        measure=_brightness, per_split=True), replace=True)
    yield metric
    registry.METRICS.unregister("toy_brightness")


class _Recording:
    """A stand-in for DALL·E (tests/test_eval_job.py's renders) that keeps every image it returns."""

    def __init__(self, data, prompts):
        from tests.test_eval_job import _RenderingGenerator

        self.inner = _RenderingGenerator(data, prompts)
        self.data = data
        self.returned: list[np.ndarray] = []

    def __call__(self, captions, scale, rng):
        images = self.inner(captions, scale, rng)
        self.returned.append(images)
        return images


def test_toy_metric_runs_in_the_eval_job(toy_metric, tmp_path):
    from dalle.eval import compositional
    from dalle.eval import main as eval_main

    data = config_lib.load_config("configs/shapes_data.py", []).data
    cfg = config_lib.load_config("configs/eval/shapes.py:quick", [
        "--config.eval.clip_checkpoint=", "--config.eval.num_prompts=3", "--config.eval.keep_top=2",
        "--config.eval.splits=('validation','zero_shot')", "--config.eval.condition_scales=(2.0,)",
        "--config.eval.metrics=('toy_brightness','compositional')", "--config.eval.batch_size=2",
        f"--config.eval.inception_checkpoint={tmp_path / 'none'}", "--config.eval.progress_bar=false",
        f"--config.eval.output_dir={tmp_path / 'out'}", "--config.eval.save_images=false"])
    prompts = [p for split in ("validation", "zero_shot") for p in compositional.shapes_prompts(data, split, 3)]
    gen = _Recording(data, prompts)
    res = eval_main.run(cfg, str(tmp_path), generator=gen)
    everything = np.concatenate(gen.returned)  # no CLIP and keep_top = num_candidates: every image is kept
    entry = res["scales"]["2"]
    assert entry["toy_brightness"]["value"] == pytest.approx(float(np.mean(everything)))
    assert entry["toy_brightness"]["images"] == 12 and entry["toy_brightness"]["scale"] == 2.0
    for i, split in enumerate(("validation", "zero_shot")):
        toy = entry["splits"][split]["toy_brightness"]
        assert toy["prompts"] == [p.caption for p in prompts[3 * i:3 * i + 3]]
        assert toy["value"] == pytest.approx(float(np.mean(everything[6 * i:6 * i + 6])))
        assert entry["splits"][split]["compositional"]["images"] == 6
        assert "clip_score" not in entry["splits"][split]
    # Built-in metrics not asked keep the entries their readers expect (null, with the reason).
    assert entry["clip_score"] == {"clip_score": None, "note": "no eval.clip_checkpoint"}
    assert entry["fid"]["value"] is None and entry["kid"]["value"] is None
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["scales"]["2"]["toy_brightness"]["value"] == pytest.approx(entry["toy_brightness"]["value"])


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.load_config("configs/eval/shapes.py", ["--config.eval.metrics=('clip_score','nope')"])
    assert "eval.metrics: 'nope' is not a registered metric (known: clip_score, compositional, fid, kid, r_precision, skin_tone, style)" \
        in str(e.value)
