"""CLIP in Haiku against open_clip (golden fixtures from tools/make_eval_fixtures.py), the converter CLI, the
tokenizers, and contrastive training through the CLIP task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import model_dir as checkpoint
from dalle.modeling.clip import model as clip_lib
from dalle.modeling.clip import convert as convert_clip

FIXTURES = {"quickgelu": "tests/fixtures/clip_openclip_quickgelu.npz", "gelu": "tests/fixtures/clip_openclip_gelu.npz"}


def _converted(name: str):
    z = np.load(FIXTURES[name])
    sd = convert_clip.load_state_dict(FIXTURES[name])
    m = convert_clip.infer_config(sd, int(z["vision_heads"]), int(z["text_heads"]),
                                  "quick_gelu" if bool(z["quick_gelu"]) else "gelu")
    return z, m, convert_clip.convert_state_dict(sd, m)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_matches_open_clip(name):
    """Same embeddings and logits as open_clip's `encode_image` / `encode_text` / `get_logits` within 1e-4."""
    z, m, params = _converted(name)
    model = clip_lib.CLIP(m)
    images = z["images_nchw"].transpose(0, 2, 3, 1)
    np.testing.assert_allclose(model.encode_image(params, images), z["image_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.encode_text(params, z["tokens"]), z["text_features"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.logits_per_image(params, images, z["tokens"]), z["logits_per_image"],
                               atol=1e-4 * np.abs(z["logits_per_image"]).max(), rtol=0)


def test_wrong_activation_is_detectable():
    """The two activations really differ on these weights, so the equivalence test above has teeth."""
    z, m, params = _converted("gelu")
    m.activation = "quick_gelu"
    got = clip_lib.CLIP(m).encode_text(params, z["tokens"])
    assert np.abs(got - z["text_features"]).max() > 1e-3


def test_infer_config_reads_shapes():
    _, m, _ = _converted("quickgelu")
    assert (m.image_size, m.patch_size, m.vision_width, m.vision_layers, m.vision_heads) == (32, 8, 64, 2, 2)
    assert (m.context_length, m.vocab_size, m.text_width, m.text_layers, m.embed_dim) == (16, 100, 64, 2, 32)
    assert m.vision_mlp_dim == 256 and m.text_mlp_dim == 256


def test_converter_rejects_leftovers_and_resnets():
    sd = convert_clip.load_state_dict(FIXTURES["gelu"])
    m = convert_clip.infer_config(sd, 2, 2, "gelu")
    with pytest.raises(convert_clip.ConversionError, match="no place"):
        convert_clip.convert_state_dict({**sd, "visual.extra.weight": np.zeros(3)}, m)
    bad = {k: v for k, v in sd.items() if not k.startswith("visual.conv1")}
    bad["visual.layer1.0.conv1.weight"] = np.zeros((1,))
    with pytest.raises(convert_clip.ConversionError, match="ModifiedResNet"):
        convert_clip.infer_config(bad)


def test_convert_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    z = np.load(FIXTURES["gelu"])
    out = tmp_path / "clip"
    assert convert_clip.main(["--from", FIXTURES["gelu"], "--out", str(out)]) == 2  # open_clip: must say activation
    assert "--activation" in capsys.readouterr().err
    rc = convert_clip.main(["--from", FIXTURES["gelu"], "--out", str(out), "--activation", "gelu",
                            "--vision_heads", "2", "--text_heads", "2"])
    assert rc == 0
    config, params = checkpoint.load_model(str(out))
    assert config.model.kind == "clip" and config.model.tokenizer == "openai_bpe"
    model = clip_lib.CLIP(config.model.to_dict())
    np.testing.assert_allclose(model.encode_text(params, z["tokens"]), z["text_features"], atol=1e-4, rtol=0)


def test_preprocess_resizes_and_normalizes():
    m = ConfigDict(dict(embed_dim=8, image_size=16, patch_size=8, vision_width=16, vision_layers=1, vision_heads=1,
                        vision_mlp_dim=16, context_length=4, vocab_size=10, text_width=16, text_layers=1,
                        text_heads=1, text_mlp_dim=16))
    model = clip_lib.CLIP(m.to_dict())
    x = np.full((2, 40, 30, 3), 255, np.uint8)
    y = model.preprocess(x)
    assert y.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(y[0, 0, 0], (1 - np.array(clip_lib.OPENAI_MEAN)) / np.array(clip_lib.OPENAI_STD),
                               rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.preprocess(np.full((1, 16, 16, 3), 2.0))


def test_pool_index():
    toks = jnp.array([[5, 9, 1, 0], [1, 0, 0, 0]])
    assert list(clip_lib.pool_index(toks, "eos", 1)) == [2, 0]
    assert list(clip_lib.pool_index(toks, "argmax", -1)) == [1, 0]


def test_contrastive_training_learns_a_fixed_batch():
    """CLIPTask.train_step on one batch of 8 distinct (image, caption) pairs: loss falls well below log(8)."""
    from dalle import config as config_lib
    from dalle.train.tasks.clip import CLIPTask

    c = config_lib.load_config("configs/clip_shapes.py", [
        "--config.data.tokenizer_path=unused.model", "--config.train.batch_size=8",
        "--config.model.vision_layers=1", "--config.model.text_layers=1", "--config.model.vision_width=32",
        "--config.model.text_width=32", "--config.model.vision_mlp_dim=64", "--config.model.text_mlp_dim=64",
        "--config.model.vision_heads=2", "--config.model.text_heads=2", "--config.train.schedule.name=constant",
        "--config.train.schedule.warmup_steps=0", "--config.train.optimizer.lr=3e-3"])
    task = CLIPTask(c)
    rs = np.random.default_rng(0)
    pad = c.model.context_length - 6
    batch = {"image": rs.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             "text_tokens": np.concatenate([rs.integers(3, 128, (8, 5)), np.ones((8, 1)), np.zeros((8, pad))],
                                           axis=1).astype(np.int32)}
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    step = jax.jit(task.train_step)
    first = None
    for i in range(25):
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        first = float(metrics["loss"]) if first is None else first
    assert first > 1.5 and float(metrics["loss"]) < 0.3
    assert float(metrics["image_to_text_acc"]) == 1.0


@pytest.mark.slow
def test_clip_trains_through_the_loop_on_shapes(tmp_path):
    """configs/clip_shapes.py through the one train loop (40 steps, batch 32): contrastive loss drops from
    ~log(32) = 3.47 and the exported model loads with its tokenizer for scoring."""
    from dalle import config as config_lib
    from dalle.data import shapes
    from dalle.tokenizers import sentencepiece as tokenizer
    from dalle.train import loop

    c = config_lib.load_config("configs/clip_shapes.py", [
        f"--config.data.tokenizer_path={tmp_path}/spm.model", "--config.train.batch_size=32",
        "--config.train.num_steps=40", "--config.train.progress_bar=false", "--config.train.eval_every=40",
        "--config.train.log_every=20", "--config.train.checkpoint_every=40",
        "--config.train.schedule.warmup_steps=5", "--config.mesh.shape=(1,1,1)"])
    world = shapes.ShapesWorld.from_config(c.data)
    caps = [world.caption(world.scene("train", i), world.rng("train", i, 1)) for i in range(2000)]
    tokenizer.train_tokenizer(caps, c.data.tokenizer_path, 128)
    result = loop.train(c, str(tmp_path / "clip"))
    assert result.status == "done"
    assert result.last_metrics["eval_loss"] < 3.0
    loaded = clip_lib.load_clip(str(tmp_path / "clip" / "model"))
    assert loaded.backbone == "clip_shapes_one_object"
    assert loaded.embed_texts(["a red circle"]).shape == (1, 64)
