"""R-precision (dalle/eval/r_precision.py), the attribute readers (dalle/eval/attribute_classifiers.py), and the
eval job on a dataset's prompts (tiny emoji collection made here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dalle.eval import attribute_classifiers as ac
from dalle.eval import r_precision as rp
from tests import data_helpers as H


class _LookupCLIP:
    """A CLIP whose image of item i (a solid colour) and caption "item i" embed to the same random vector."""

    backbone = "lookup"

    def __init__(self, n: int):
        rng = np.random.default_rng(0)
        self.vectors = rng.normal(size=(n, 32))
        self.colours = rng.integers(0, 256, (n, 3))

    def image(self, i: int) -> np.ndarray:
        return np.broadcast_to(self.colours[i].astype(np.uint8), (8, 8, 3)).copy()

    def embed_images(self, images):
        idx = [int(np.argmin(np.abs(self.colours - im[0, 0].astype(int)).sum(1))) for im in images]
        return self.vectors[idx]

    def embed_texts(self, captions):
        return self.vectors[[int(c.split()[1]) for c in captions]]


def _pool(n: int) -> rp.CaptionPool:
    return rp.CaptionPool([f"item {i}" for i in range(n)], np.array([f"g{i}" for i in range(n)], dtype=object))


def test_r_precision_is_one_for_matching_images_and_near_chance_for_others():
    clip, pool = _LookupCLIP(300), _pool(300)
    images = np.stack([clip.image(i) for i in range(200)])
    caps, groups, seeds = [f"item {i}" for i in range(200)], [f"g{i}" for i in range(200)], list(range(200))
    assert rp.ranks_first(clip, images, caps, groups, seeds, pool).all()
    shifted = np.roll(images, 1, axis=0)  # each image shows another item
    hits = rp.ranks_first(clip, shifted, caps, groups, seeds, pool)
    # A wrong image wins only when its own item is not among the 99 distractors (~2/3 of the time here) and it
    # still beats them all: far from 1, and the right caption is never the best match of a wrong image.
    assert hits.mean() < 0.05
    s = rp.summarize(hits, clip.backbone)
    assert s["count"] == 200 and s["chance"] == 0.01 and s["stderr"] == pytest.approx(
        np.sqrt(s["r1"] * (1 - s["r1"]) / 200))


def test_distractors_exclude_the_item_and_are_reproducible():
    pool = _pool(150)
    pool.groups[:20] = "same"
    d = rp.distractors(pool, "same", seed=7)
    assert len(d) == rp.R - 1 and len(set(d.tolist())) == rp.R - 1 and (pool.groups[d] != "same").all()
    np.testing.assert_array_equal(d, rp.distractors(pool, "same", seed=7))
    assert not np.array_equal(d, rp.distractors(pool, "same", seed=8))


def test_softmax_classifier_separates_and_is_deterministic():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (50, 4)), rng.normal(3, 1, (50, 4))])
    y = ["a"] * 50 + ["b"] * 50
    clf = ac.SoftmaxClassifier.fit(x, y)
    assert np.mean(np.array(clf.predict(x)) == np.array(y)) > 0.95
    np.testing.assert_array_equal(clf.weights, ac.SoftmaxClassifier.fit(x, y).weights)
    with pytest.raises(ValueError, match=">= 2 classes"):
        ac.SoftmaxClassifier.fit(x, ["a"] * 100)


def test_skin_tone_measurer_reads_synthetic_swatches():
    """Discs and squares of the five skin colours, with a dark feature, on white; fitted on one set of shapes and
    sizes, read on others."""
    from PIL import Image, ImageDraw

    def swatch(rgb, box, square):
        im = Image.new("RGB", (32, 32), (255, 255, 255))
        d = ImageDraw.Draw(im)
        (d.rectangle if square else d.ellipse)(box, fill=rgb)
        d.rectangle((14, 10, 17, 20), fill=(30, 30, 30))
        return np.asarray(im)

    tones = dict(zip(("light", "medium-light", "medium", "medium-dark", "dark"), H.EMOJI_SKIN_RGB.values()))
    train_x, train_y, test_x, test_y = [], [], [], []
    for name, rgb in tones.items():
        for k, box in enumerate([(4, 4, 28, 28), (6, 2, 26, 30), (2, 8, 30, 24)]):
            train_x.append(swatch(rgb, box, square=k % 2 == 0))
            train_y.append(name)
        for box in [(8, 8, 24, 24), (3, 3, 29, 29)]:
            test_x.append(swatch(rgb, box, square=False))
            test_y.append(name)
    clf = ac.SoftmaxClassifier.fit(ac.tone_features(np.stack(train_x), (255, 255, 255)), train_y)
    assert clf.predict(ac.tone_features(np.stack(test_x), (255, 255, 255))) == test_y


@pytest.fixture(scope="module")
def emoji_many(tmp_path_factory):
    """107 emoji (R-precision needs >= 100 distinct items for its distractors), two vendors, 32 px."""
    import os

    from dalle.data import build

    tmp = str(tmp_path_factory.mktemp("emoji_many"))
    entries = H.emoji_entries(num_plain=100, num_toned=6)
    pins = [H.write_emoji_package(os.path.join(tmp, "npm"), v, entries) for v in ("google", "twitter")]
    config = H.emoji_config(tmp, pins, validation_fraction=0.2)
    build.build_dataset(config.data)
    return config


def test_readers_fit_on_train_and_report_validation_accuracy(emoji_many):
    tone = ac.fit_reader(emoji_many.data, "skin_tone")
    style = ac.fit_reader(emoji_many.data, "vendor")
    assert style.validation_count > 10 and style.validation_accuracy == 1.0  # disc vs square
    assert tone.classifier.labels == sorted(["light", "medium-light", "medium", "medium-dark", "dark"])
    if tone.validation_count:
        assert tone.validation_accuracy >= 0.9


def test_caption_pool_needs_enough_items(tmp_path):
    config = H.build_tiny_emoji(str(tmp_path))
    with pytest.raises(ValueError, match="needs captions of >= 100 distinct items.*has 19"):
        rp.caption_pool(config.data)


class _ReferenceGenerator:
    """Stands in for DALL·E: candidate 0 is noise, candidate 1 the prompt's real image."""

    def __init__(self, data, prompts):
        self.data = data
        self.real = {p.caption: p.reference for p in prompts}

    def __call__(self, captions, scale, rng):
        noise = np.random.default_rng(0)
        return np.stack([x for c in captions for x in (noise.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                                          self.real[c])])

    def roundtrip(self, images):
        return np.array(images)


def test_eval_job_on_dataset_prompts(emoji_many, tmp_path):
    """Generated = the real images: R@1 of the kept (CLIP-reranked) images equals the real-image ceiling only
    where reranking keeps the real one; the first-sample R@1 (noise) is measured too; skin tone and style of
    real images are read as well as on the ceiling; every entry names its CLIP."""
    import jax

    from dalle import config as config_lib
    from dalle import model_dir
    from dalle.eval import main as eval_main
    from dalle.modeling.clip import model as clip_lib
    from dalle.modeling.clip import schema as clip_schema
    from dalle.tokenizers import sentencepiece as tokenizer

    data = emoji_many.data
    caps = [p.caption for p in eval_main.dataset_prompts(data, "train", 400)]
    tokenizer.train_tokenizer(caps, data.tokenizer_path, 64, model_type="bpe")
    m = clip_schema.clip_defaults()
    m.update(dict(name="tiny-random-clip", embed_dim=16, image_size=32, patch_size=8, vision_width=32,
                  vision_layers=1, vision_heads=2, vision_mlp_dim=64, context_length=16, vocab_size=64,
                  text_width=32, text_layers=1, text_heads=2, text_mlp_dim=64, text_pool="eos", eos_id=1,
                  tokenizer="sentencepiece", tokenizer_path=data.tokenizer_path, activation="gelu"))
    clip_dir = model_dir.save_model(str(tmp_path / "clip"), clip_lib.CLIP(m).init(jax.random.PRNGKey(0)),
                                    config_lib.validate(config_lib.ConfigDict({"model": m})))
    cfg = config_lib.load_config("configs/eval/emoji.py:quick", [
        f"--config.eval.clip_checkpoint={clip_dir}", "--config.eval.num_prompts=12",
        "--config.eval.condition_scales=(1.0,)", f"--config.eval.inception_checkpoint={tmp_path / 'none'}",
        "--config.eval.progress_bar=false", f"--config.eval.output_dir={tmp_path / 'out'}",
        "--config.eval.save_images=false"])
    prompts = eval_main.make_prompts(cfg.eval, data)
    assert {p.split for p in prompts} == {"validation", "zero_shot"}
    assert all(p.reference is not None and "emoji" in p.fields for p in prompts)
    res = eval_main.run(cfg, str(tmp_path), generator=_ReferenceGenerator(data, prompts))
    ceil = res["ceilings"]
    entry = res["scales"]["1"]
    for split in ("validation", "zero_shot"):
        real = ceil["r_precision"][split]["real"]
        assert real["backbone"] == "tiny-random-clip" and real["count"] == len(
            [p for p in prompts if p.split == split])
        assert ceil["r_precision"][split]["reconstructed"]["r1"] == real["r1"]  # a lossless round trip
        got = entry["splits"][split]["r_precision"]
        assert got["count"] == real["count"] and got["r1_first_sample"] is not None
        style = entry["splits"][split]["style"]
        assert style["reader_validation_accuracy"] == 1.0
    zs = [p for p in prompts if p.split == "zero_shot"]
    assert entry["splits"]["zero_shot"]["style"]["zero_shot"]["count"] == sum(
        p.fields["zero_shot_kind"] == "style" for p in zs)
    real_style = ceil["style"]["zero_shot"]["real"]["accuracy"]
    assert real_style == 1.0
    assert entry["fid"]["value"] is not None and "FID-CLIP" in " ".join(res["notes"])
    from tools import eval_report

    text = eval_report.render_emoji(json.loads(json.dumps(res, default=float)), "metrics.json")
    real_v = ceil["r_precision"]["validation"]["real"]
    assert f"| real (ceiling) | {100 * real_v['r1']:.1f}%" in text and "zero-shot skin tone" in text


def test_eval_report_keeps_other_sections():
    from tools import eval_report

    doc = eval_report.replace_section("", "shapes", "## Shapes\n\n| a |\n")
    assert doc.startswith("# Evaluation") and "<!-- eval:shapes -->\n## Shapes" in doc
    doc = eval_report.replace_section(doc, "emoji", "## Emoji v1\n")
    doc = eval_report.replace_section(doc, "emoji", "## Emoji v2\n")
    assert "## Shapes" in doc and "## Emoji v2" in doc and "v1" not in doc
    assert doc.index("eval:shapes") < doc.index("eval:emoji")
