"""`dalle eval` end to end with tiny random-weight models saved here (DALL·E decoder-only, VQGAN f4/32, CLIP),
plus the job's parts that do not need a model (prompt files, grids, the SVG plot, reference statistics)."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import model_dir as checkpoint
from dalle import config as config_lib
from dalle.data import shapes
from dalle.tokenizers import sentencepiece as tokenizer
from dalle.modeling.clip import model as clip_lib
from dalle.eval import fid
from dalle.eval import main as eval_main
from dalle.modeling.clip import schema as clip_schema


_WORLD: dict[str, tuple[ConfigDict, str]] = {}


def _tiny_world(tmp_path) -> tuple[ConfigDict, str]:
    """A one-object 32 px world with a trained sentencepiece vocabulary (text side of the data config); trained
    once per test session (the tokenizer file outlives the first test's tmp_path within the session)."""
    if "world" in _WORLD:
        return _WORLD["world"]
    c = config_lib.load_config("configs/shapes_data.py", [])
    data = c.data
    data.tokenizer_path = str(tmp_path / "spm.model")
    data.vocab_size = 128
    data.max_text_length = 16
    world = shapes.ShapesWorld.from_config(data)
    caps = [world.caption(world.scene("train", i), world.rng("train", i, 1)) for i in range(2000)]
    tokenizer.train_tokenizer(caps, data.tokenizer_path, 128)
    _WORLD["world"] = config_lib.validate(ConfigDict({"data": data.to_dict()})).data, data.tokenizer_path
    return _WORLD["world"]


def _save_clip(tmp_path, data: ConfigDict) -> str:
    m = clip_schema.clip_defaults()
    m.update(dict(name="tiny-random-clip", embed_dim=16, image_size=32, patch_size=8, vision_width=32,
                  vision_layers=1, vision_heads=2, vision_mlp_dim=64, context_length=16, vocab_size=128,
                  text_width=32, text_layers=1, text_heads=2, text_mlp_dim=64, text_pool="eos", eos_id=1,
                  tokenizer="sentencepiece", tokenizer_path=data.tokenizer_path, activation="gelu"))
    params = clip_lib.CLIP(m).init(jax.random.PRNGKey(0))
    return checkpoint.save_model(str(tmp_path / "clip"), params, ConfigDict({"model": m}))


def _save_dalle(tmp_path, data: ConfigDict) -> str:
    from dalle.modeling import model as model_lib
    from dalle.modeling import presets
    from dalle.modeling.vqgan import model as vqgan_lib

    vq_config = config_lib.load_config("configs/vqgan_f4_32.py", ["--config.model.n_embed=512"])
    vq = vqgan_lib.VQGAN(vqgan_lib.VQGANConfig.from_config(vq_config))
    vq_dir = checkpoint.save_model(str(tmp_path / "vqgan"), vq.init(jax.random.PRNGKey(1)),
                                   ConfigDict({"model": vq_config.model.to_dict()}))
    m = presets.tiny_decoder_only(text_vocab_size=128, image_vocab_size=512, max_text_length=16, image_length=64)
    m.num_layers = 1
    m.d_model = 32
    m.num_heads = 2
    m.ffn_dim = 64
    model = model_lib.build_model(m)
    params = model_lib.random_params(model, seed=0)
    d = ConfigDict(data.to_dict())
    d.vqgan_checkpoint = vq_dir
    return checkpoint.save_model(str(tmp_path / "dalle"), params, ConfigDict({"model": m.to_dict(),
                                                                              "data": d.to_dict()}))


@pytest.mark.slow
def test_eval_job_end_to_end(tmp_path):
    """Random models: the numbers mean nothing, but every output must exist, be consistent, and name its
    networks; reranking must keep the CLIP-best candidate; no FID Inception here -> FID-CLIP, said so."""
    data, _ = _tiny_world(tmp_path)
    clip_dir = _save_clip(tmp_path, data)
    dalle_dir = _save_dalle(tmp_path, data)
    out = tmp_path / "eval_out"
    rc = eval_main.main(["--config", "configs/eval/shapes.py:quick", "--checkpoint", dalle_dir,
                         f"--config.eval.clip_checkpoint={clip_dir}",
                         f"--config.eval.inception_checkpoint={tmp_path / 'no_inception'}",
                         "--config.eval.num_prompts=3", "--config.eval.splits=('validation','zero_shot')",
                         "--config.eval.batch_size=3", "--config.eval.kid_subset_size=4",
                         "--config.eval.kid_subsets=5", "--config.eval.progress_bar=false",
                         f"--config.eval.output_dir={out}"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["scales"]) == {"1", "3"}
    assert metrics["checkpoint_step"] is None  # a model saved without training records no step
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))  # the same results for TensorBoard
    assert metrics["clip_backbone"] == "tiny-random-clip"
    assert metrics["fid_network"]["metric"] == "FID-CLIP"
    assert "tiny-random-clip" in metrics["fid_network"]["name"]
    assert any("FID-CLIP" in n for n in metrics["notes"])
    for scale, entry in metrics["scales"].items():
        assert set(entry["splits"]) == {"validation", "zero_shot"}
        for split, e in entry["splits"].items():
            acc = e["compositional"]
            assert acc["images"] == 3 and 0.0 <= acc["all"] <= 1.0 and 0.0 <= acc["count"] <= 1.0
            assert acc["first_sample"]["images"] == 3 and acc["stderr"] is not None
            assert sum(k["images"] for name, k in acc["by_kind"].items() if name.startswith("objects:")) == 3
            assert e["clip_score"]["backbone"] == "tiny-random-clip"
        assert entry["clip_score"]["count"] == 6
        assert entry["fid"]["value"] is not None and entry["fid"]["value"] >= -1e-6
        assert entry["fid"]["metric"] == "FID-CLIP"
        assert entry["kid"]["metric"] == "KID-CLIP"
        assert (out / "grids" / f"s{scale}_validation.png").exists()
    assert (out / "fid_vs_clip.svg").read_text().count("<circle") == 2
    for split in ("validation", "zero_shot"):  # the random VQGAN's round trip, judged like the samples
        assert metrics["tokenizer_ceiling"][split]["images"] == 3
        assert 0.0 <= metrics["tokenizer_ceiling"][split]["all"] <= 1.0
    # the saved images are the kept ones: re-scoring them with the CLIP gives the reported CLIP score
    clip = clip_lib.load_clip(clip_dir)
    from PIL import Image

    for scale in ("1", "3"):
        ims, caps = [], []
        for split in ("validation", "zero_shot"):
            from dalle.eval import compositional

            prompts = compositional.shapes_prompts(data, split, 3)
            for j, p in enumerate(prompts):
                ims.append(np.asarray(Image.open(out / "images" / f"s{scale}" / split / f"{j:05d}_0.png")))
                caps.append(p.caption)
        from dalle.eval import clip_score

        again = clip_score.clip_score(clip, np.stack(ims), caps)["clip_score"]
        assert again == pytest.approx(metrics["scales"][scale]["clip_score"]["clip_score"], abs=1e-4)


class _RenderingGenerator:
    """Stands in for DALL·E: candidate 0 is noise, candidate 1 the exact render of the prompt's scene."""

    def __init__(self, data: ConfigDict, prompts):
        self.data, self.world = data, shapes.ShapesWorld.from_config(data)
        self.scenes = {p.caption: p.scene for p in prompts}

    def __call__(self, captions, scale, rng):
        rs = np.random.default_rng(0)
        out = []
        for c in captions:
            out.append(rs.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            out.append(self.world.render(self.scenes[c]))
        return np.stack(out)

    def roundtrip(self, images):  # a lossless "tokenizer", except for the first image, blanked
        out = np.array(images)
        out[0] = 0
        return out


def test_eval_job_on_rendered_candidates_without_clip(tmp_path):
    """With renders as the 'generated' images: keep_top 2 keeps both (no CLIP -> no reranking, said so); accuracy
    counts the noise candidates as wrong (exactly 0.5), and with no feature network FID is null with a reason."""
    data, _ = _tiny_world(tmp_path)
    cfg = config_lib.load_config("configs/eval/shapes.py:quick", [
        "--config.eval.clip_checkpoint=", "--config.eval.num_prompts=4", "--config.eval.keep_top=2",
        "--config.eval.splits=('validation',)", "--config.eval.condition_scales=(1.0,)",
        f"--config.eval.inception_checkpoint={tmp_path / 'none'}", "--config.eval.progress_bar=false",
        f"--config.eval.output_dir={tmp_path / 'out'}", "--config.eval.save_images=false"])
    from dalle.eval import compositional

    prompts = compositional.shapes_prompts(data, "validation", 4)
    gen = _RenderingGenerator(data, prompts)
    res = eval_main.run(cfg, str(tmp_path), generator=gen)
    entry = res["scales"]["1"]
    assert entry["splits"]["validation"]["compositional"]["all"] == 0.5
    assert entry["splits"]["validation"]["compositional"]["images"] == 8
    # Without reranking only candidate 0 counts: the noise, never right.
    assert entry["splits"]["validation"]["compositional"]["first_sample"]["all"] == 0.0
    assert entry["splits"]["validation"]["compositional"]["first_sample"]["images"] == 4
    # The tokenizer ceiling: the 4 prompts' renders through `roundtrip`, whose first image is lost.
    assert res["tokenizer_ceiling"]["validation"]["images"] == 4
    assert res["tokenizer_ceiling"]["validation"]["all"] == 0.75
    assert entry["clip_score"]["clip_score"] is None and "clip_checkpoint" in entry["clip_score"]["note"]
    assert entry["fid"]["value"] is None and entry["fid"]["note"]
    assert any("FID/KID not computed" in n for n in res["notes"])
    assert "no scale has both numbers" in (tmp_path / "out" / "fid_vs_clip.svg").read_text()


class _GuidanceSensitiveGenerator(_RenderingGenerator):
    """Renders the prompt's scene only at guidance 2: the sweep's best scale is known."""

    def __call__(self, captions, scale, rng):
        out = super().__call__(captions, scale, rng)
        return out if scale == 2.0 else np.zeros_like(out)


def test_sweep_writes_its_best_guidance_into_the_model(tmp_path):
    """The exported model's sampling section gets the scale with the best validation accuracy and the settings the
    job sampled with (the model's own where the eval config says None)."""
    data, _ = _tiny_world(tmp_path)
    work = tmp_path / "work"
    checkpoint.save_model(str(work / "model"), {"w": np.zeros(2, np.float32)},
                          ConfigDict({"model": {"image_vocab_size": 512},
                                      "sampling": {"guidance": 3.0, "temperature": 0.7, "top_k": 8}}))
    cfg = config_lib.load_config("configs/eval/shapes.py:quick", [
        "--config.eval.clip_checkpoint=", "--config.eval.num_prompts=2", "--config.eval.keep_top=2",
        "--config.eval.splits=('validation',)", "--config.eval.condition_scales=(1.0,2.0,3.0)",
        f"--config.eval.inception_checkpoint={tmp_path / 'none'}", "--config.eval.progress_bar=false",
        f"--config.eval.output_dir={tmp_path / 'out'}", "--config.eval.save_images=false"])
    from dalle.eval import compositional

    gen = _GuidanceSensitiveGenerator(data, compositional.shapes_prompts(data, "validation", 2))
    gen.config = checkpoint.read_config(str(work / "model"))
    res = eval_main.run(cfg, str(work), generator=gen)
    assert res["sampling_written"]["written"] and res["sampling_written"]["guidance"] == 2.0
    assert res["sampling"]["temperature"] == 0.7 and res["sampling"]["top_k"] == 8  # the model's own
    section = checkpoint.read_config(str(work / "model")).sampling.to_dict()
    assert section == dict(guidance=2.0, temperature=0.7, top_k=8, top_p=1.0, candidates=2, keep=2,
                           clip_checkpoint="", examples=())
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["sampling_written"]["by_scale"] == \
        {"1": 0.0, "2": 0.5, "3": 0.0}


def test_fid_clip_svg_places_points():
    svg = eval_main.fid_clip_svg([(1.0, 20.0, 50.0), (3.0, 25.0, 40.0), (5.0, None, 30.0)], "FID", "B/32")
    assert svg.count("<circle") == 2 and "s=3" in svg and "not plotted" in svg and "[5.0]" in svg


def test_image_grid_layout():
    ims = np.zeros((2, 3, 4, 5, 3), np.uint8)
    ims[1, 2] = 255
    g = eval_main.image_grid(ims, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert (g[1 + 5:1 + 5 + 4, 1 + 12:1 + 12 + 5] == 255).all() and g[0, 0, 0] == 128


def test_prompts_file(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("a red circle\n\n# comment\na blue square\n")
    got = eval_main.read_prompts_file(str(p), 10)
    assert [x.caption for x in got] == ["a red circle", "a blue square"]
    with pytest.raises(FileNotFoundError, match="eval.prompts_file"):
        eval_main.read_prompts_file(str(tmp_path / "missing.txt"), 1)


def test_relation_prob_captions_the_prompts_as_another_world_would():
    """A model trained with more relation captions is measured on the default world's prompts when asked."""
    default = config_lib.load_config("configs/shapes_data.py:multi_32", []).data
    trained = config_lib.load_config("configs/shapes_data.py:multi_32", ["--config.data.relation_prob=1.0"]).data
    ev = config_lib.load_config("configs/eval/shapes.py:multi", ["--config.eval.num_prompts=30"]).eval
    same = config_lib.load_config("configs/eval/shapes.py:multi", [
        "--config.eval.num_prompts=30", f"--config.eval.relation_prob={default.relation_prob}"]).eval

    def captions(e, data):
        return [(p.split, p.caption) for p in eval_main.make_prompts(e, data)]

    assert captions(same, trained) == captions(ev, default)
    assert captions(ev, trained) != captions(ev, default)
    assert trained.relation_prob == 1.0  # the checkpoint's own data config is left as it was


def test_eval_config_errors_name_the_key():
    with pytest.raises(config_lib.ConfigError, match="eval.keep_top"):
        config_lib.load_config("configs/eval/shapes.py", ["--config.eval.keep_top=9"])
    with pytest.raises(config_lib.ConfigError, match="eval.splits"):
        config_lib.load_config("configs/eval/shapes.py", ["--config.eval.splits=('test',)"])
    with pytest.raises(config_lib.ConfigError, match="eval.relation_prob = 1.5"):
        config_lib.load_config("configs/eval/shapes.py", ["--config.eval.relation_prob=1.5"])


def test_reference_statistics_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((50, 4))
    st = fid.compute_statistics(feats, "net-A", "none", "unit test")
    path = st.save(str(tmp_path / "ref.npz"))
    back = fid.Statistics.load(path)
    assert back.network == "net-A" and back.count == 50 and back.source == "unit test"
    np.testing.assert_allclose(back.sigma, np.cov(feats, rowvar=False))
    assert fid.frechet_distance(back, st) == pytest.approx(0.0, abs=1e-9)
    other = fid.compute_statistics(feats, "net-B")
    with pytest.raises(ValueError, match="different networks"):
        fid.frechet_distance(back, other)


def test_reference_command_on_an_image_folder(tmp_path, capsys):
    """`dalle eval reference --images DIR` writes statistics named after the (fallback) network, which the job's
    FID then accepts; FID of those images against their own reference is 0."""
    from PIL import Image

    data, _ = _tiny_world(tmp_path)
    clip_dir = _save_clip(tmp_path, data)
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "ref.npz"
    rc = eval_main.main(["reference", "--config", "configs/eval/shapes.py:quick", "--images", str(folder),
                         "--out", str(out), f"--config.eval.clip_checkpoint={clip_dir}",
                         f"--config.eval.inception_checkpoint={tmp_path / 'none'}"])
    assert rc == 0
    stats = fid.Statistics.load(str(out))
    assert stats.count == 6 and "tiny-random-clip" in stats.network and stats.features.shape == (6, 16)
    again = fid.compute_statistics(clip_lib.load_clip(clip_dir).embed_images(eval_main.read_image_folder(str(folder))))
    assert fid.frechet_distance(again.mu, again.sigma, stats.mu, stats.sigma) == pytest.approx(0.0, abs=1e-6)
