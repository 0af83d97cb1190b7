"""The text-conditional GAN (dalle/modeling/gan, dalle/train/tasks/gan.py): losses on known inputs, network shapes,
two training steps through the one loop on a tiny config, and sampling from the saved model with GANGenerator."""

from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.generation import GenerationError
from dalle.modeling.gan import losses
from dalle.modeling.gan import model as gan_lib
from tests import data_helpers

TINY_MODEL = dict(kind="gan", image_size=32, z_dim=8, cond_dim=8, gen_channels=(16, 8, 8, 8), gen_norm="layer",
                  disc_channels=(8, 16), context_length=12, vocab_size=64, embed_dim=16, text_width=16,
                  text_layers=1, text_heads=2, text_mlp_dim=32, activation="gelu")


def step_config(model: dict | None = None, **gan_loss) -> ConfigDict:
    """A validated tiny config for stepping a GANTask by hand (no data read, no tokenizer needed)."""
    return config_lib.validate(ConfigDict({
        "data": {"source": "shapes", "image_size": 32, "max_text_length": 12, "vocab_size": 64,
                 "tokenizer_path": "unused.model"},
        "model": {**TINY_MODEL, **(model or {})}, "gan_loss": gan_loss,
        "train": {"batch_size": 4, "grad_clip_norm": 0.0}, "mesh": {"shape": (1, 1, 1)}}))


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------
def test_hinge_losses_on_known_values():
    real = jnp.array([2.0, 0.5, -1.0])  # relu(1 - real) = [0, 0.5, 2]
    fake = jnp.array([-2.0, 0.0, 1.0])  # relu(1 + fake) = [0, 1, 2]
    mis = jnp.array([-3.0, 1.0, 0.0])  # relu(1 + mis) = [0, 2, 1]
    assert float(losses.hinge_real(real)) == pytest.approx(2.5 / 3)
    assert float(losses.hinge_fake(fake)) == pytest.approx(1.0)
    # Reed et al.'s weighting: real + (1 - w) fake + w mismatched; w = 0 is the plain conditional hinge loss.
    assert float(losses.matching_aware_d_loss(real, fake, mis, 0.5)) == pytest.approx(2.5 / 3 + 0.5 + 0.5)
    assert float(losses.matching_aware_d_loss(real, fake, mis, 0.0)) == pytest.approx(2.5 / 3 + 1.0)
    # Rows without a different caption to pair with leave the mismatched term's mean.
    valid = jnp.array([True, False, True])
    assert float(losses.hinge_fake(mis, valid)) == pytest.approx(0.5)
    assert float(losses.generator_hinge_loss(jnp.array([1.0, 2.0, 3.0]))) == pytest.approx(-2.0)
    acc = losses.accuracies(real, fake, mis, valid)
    assert [float(acc[k]) for k in ("acc_real", "acc_fake", "acc_mismatch")] == pytest.approx([2 / 3, 1 / 3, 0.5])


def test_projection_term_rewards_aligned_text():
    h = jnp.array([[1.0, 2.0, -1.0]])
    psi = jnp.array([0.25])
    assert float(losses.projection_logits(psi, h, h)[0]) == pytest.approx(0.25 + 6.0)
    assert float(losses.projection_logits(psi, h, -h)[0]) == pytest.approx(0.25 - 6.0)
    # In the discriminator the caption enters only through <V s, phi(x)>: odd in s around psi(phi(x)).
    gan = gan_lib.GAN(TINY_MODEL)
    d = gan.init(jax.random.PRNGKey(0))["discriminator"]
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 3), minval=-1.0, maxval=1.0)
    s = losses.l2_normalize(jax.random.normal(jax.random.PRNGKey(2), (3, 16)))
    feats = jax.jit(gan.features)(d, x)
    logits = jax.jit(gan.logits)
    plus, minus, psi_only = logits(d, feats, s), logits(d, feats, -s), logits(d, feats, jnp.zeros_like(s))
    np.testing.assert_allclose(plus + minus, 2 * psi_only, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(plus - minus))) > 1e-3


def test_mismatched_captions_are_never_the_same_caption():
    a, b, c = [1, 5, 0], [2, 5, 0], [3, 1, 0]
    tokens = jnp.array([a, a, b, a, c, c])
    index, valid = losses.mismatch_index(tokens)
    index = np.asarray(index)
    assert np.asarray(valid).all()
    assert [int(i) for i in index] == [2, 2, 3, 4, 0, 0]  # the nearest following row with another caption
    assert all(not np.array_equal(tokens[i], tokens[j]) for i, j in enumerate(index))
    _, valid = losses.mismatch_index(jnp.array([a, a, a]))
    assert not np.asarray(valid).any()  # nothing to mismatch with: the term is masked out
    index, valid = losses.mismatch_index(jnp.array([a]))
    assert index.shape == (1,) and not bool(valid[0])


def test_info_nce_and_r1():
    x = jnp.eye(4)
    loss, acc = losses.info_nce(x, 3 * x, temperature=0.1)
    assert float(acc) == 1.0 and float(loss) < 0.01
    loss_wrong, acc_wrong = losses.info_nce(x, jnp.roll(x, 1, axis=0), temperature=0.1)
    assert float(acc_wrong) == 0.0 and float(loss_wrong) > 5.0
    grads = jnp.array([[[[1.0]], [[2.0]]], [[[0.0]], [[3.0]]]])  # per-row |g|^2 = 5 and 9
    assert float(losses.r1_penalty(grads)) == pytest.approx(7.0)


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------
def test_network_shapes_and_per_sample_generation():
    gan = gan_lib.GAN(TINY_MODEL, contrastive=True)
    params = gan.init(jax.random.PRNGKey(0))
    assert set(params) == {"text", "generator", "discriminator"}
    tokens = jnp.array([[5, 6, 1] + [0] * 9, [7, 1] + [0] * 10, [5, 6, 1] + [0] * 9])
    s = jax.jit(gan.encode_text)(params["text"], tokens)
    assert s.shape == (3, 16)
    np.testing.assert_allclose(jnp.linalg.norm(s, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(s[0], s[2], atol=1e-6)  # same caption, same embedding
    z = jnp.asarray(gan_lib.noise(0, range(3), 8))
    generate = jax.jit(gan.generate)
    images = generate(params["generator"], z, s)
    assert images.shape == (3, 32, 32, 3) and float(jnp.max(jnp.abs(images))) <= 1.0
    # Per-sample norms: an image depends on its own noise and caption only, not on the rest of the batch.
    np.testing.assert_allclose(generate(params["generator"], z[1:2], s[1:2])[0], images[1], atol=1e-5)
    feats = jax.jit(gan.features)(params["discriminator"], images)
    assert feats.shape == (3, 16) and jax.jit(gan.logits)(params["discriminator"], feats, s).shape == (3,)
    img, txt = jax.jit(gan.contrast)(params["discriminator"], feats, s)
    assert img.shape == txt.shape == (3, 16)
    # The noise of image i depends on (seed, i) only.
    np.testing.assert_array_equal(gan_lib.noise(3, [0, 1], 8)[1], gan_lib.noise(3, [1], 8)[0])
    assert not np.allclose(gan_lib.noise(3, [0], 8), gan_lib.noise(4, [0], 8))


def test_bad_configs_name_the_key():
    base = {"model": dict(TINY_MODEL), "data": {"source": "shapes", "image_size": 32, "max_text_length": 12,
                                                   "vocab_size": 64}}

    def check(model=None, data=None, **sections):
        c = ConfigDict({"model": {**base["model"], **(model or {})}, "data": {**base["data"], **(data or {})},
                        **sections})
        return config_lib.validate(c)

    check()
    with pytest.raises(config_lib.ConfigError, match=r"model.gen_channels has 3 entries, which make 16 px"):
        check({"gen_channels": (16, 8, 8)})
    with pytest.raises(config_lib.ConfigError, match=r"model.context_length = 12 must equal data.max_text_length"):
        check(data={"max_text_length": 18})
    with pytest.raises(config_lib.ConfigError, match=r"model.gen_norm = 'batch'"):
        check({"gen_norm": "batch"})
    with pytest.raises(config_lib.ConfigError, match=r"train_text_encoder = False without model.text_encoder_init"):
        check({"train_text_encoder": False})
    with pytest.raises(config_lib.ConfigError, match=r"gan_loss.mismatch_weight = 1.5"):
        check(gan_loss=ConfigDict({"mismatch_weight": 1.5}))
    c = config_lib.load_config("configs/gan_shapes.py")
    assert c.model.kind == "gan" and c.gan_loss.ema_decay > 0
    assert config_lib.load_config("configs/gan_shapes.py:clip,root=/r").model.text_encoder_init == "/r/clip/model"


# ----------------------------------------------------------------------------------------------------------------
# Training through the one loop, then sampling
# ----------------------------------------------------------------------------------------------------------------
def tiny_config(tmp_dir: str, **gan_loss) -> ConfigDict:
    from dalle.data import shapes
    from dalle.tokenizers import sentencepiece as tokenizer

    data = data_helpers.shapes_config(tmp_dir).data
    world = shapes.ShapesWorld.from_config(data)
    tokenizer.train_tokenizer([world.caption(world.scene("train", i), world.rng("train", i, 1)) for i in range(400)],
                              data.tokenizer_path, 64, model_type="word")
    c = ConfigDict({"name": "gan_tiny", "seed": 0, "data": data.to_dict(), "model": dict(TINY_MODEL),
                    "gan_loss": dict(ema_decay=0.9, summary_noise=2, **gan_loss),
                    "train": dict(batch_size=8, num_steps=2, log_every=1, eval_every=0, checkpoint_every=100,
                                  sample_every=0, progress_bar=False,
                                  optimizer=dict(name="adam", lr=1e-3, b1=0.5, b2=0.999),
                                  schedule=dict(name="constant", warmup_steps=0), grad_clip_norm=0.0),
                    "mesh": {"shape": (1, 1, 1)}})
    return config_lib.validate(c)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two steps of the tiny GAN through dalle.train.loop: (config, workdir, initial state, final state)."""
    from dalle.train import checkpointing, loop

    tmp = str(tmp_path_factory.mktemp("gan"))
    config = tiny_config(tmp)
    task = loop.make_task(config)
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))  # as the loop derives it
    initial = jax.device_get(jax.jit(task.init_state)(init_rng))
    workdir = os.path.join(tmp, "run")
    result = loop.train(config, workdir)
    abstract = jax.eval_shape(task.init_state, init_rng)
    final, _ = checkpointing.Checkpointer(workdir).restore(abstract, 2)
    return config, workdir, initial, jax.device_get(final), result


def test_two_training_steps_through_the_loop(trained):
    config, workdir, initial, final, result = trained
    assert result.status == "done" and result.step == 2 and result.nonfinite_steps == 0
    m = result.last_metrics
    for key in ("loss", "d_loss", "g_loss", "acc_real", "acc_fake", "acc_mismatch", "logits_real",
                "logits_mismatch", "text_grad_norm"):
        assert np.isfinite(m[key]), key
    assert 0.0 <= m["acc_real"] <= 1.0 and 0.0 <= m["acc_fake"] <= 1.0
    # Without R1 and contrastive terms (the defaults) the discriminator's loss is the adversarial part alone.
    assert m["d_loss"] == pytest.approx(m["d_adv_loss"]) and "r1" not in m and "d_contrastive_loss" not in m
    assert int(final["step"]) == 2
    for key in ("gen_params", "disc_params", "text_params", "gen_ema"):  # both players (and the encoder) moved
        diffs = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), initial[key], final[key])
        assert max(jax.tree_util.tree_leaves(diffs)) > 0, key
    assert set(final) == {"step", "gen_params", "disc_params", "text_params", "gen_opt", "disc_opt", "text_opt",
                          "gen_ema"}


def test_summaries_are_a_grid_of_samples(trained):
    from dalle.train import loop

    config, _, _, final, _ = trained
    task = loop.make_task(config)
    grid = task.summaries(jax.tree_util.tree_map(jnp.asarray, final), 2)["samples"]
    # One row per first training caption (4), one column per noise vector (2), 2 px separators.
    assert grid.dtype == np.uint8 and grid.shape == (1, 4 * 34 + 2, 2 * 34 + 2, 3)


def test_saved_model_samples_deterministically_and_follows_the_text(trained):
    from dalle.modeling.gan.api import GANGenerator

    _, workdir, _, final, _ = trained
    g = GANGenerator.from_checkpoint(workdir)  # the trainer workdir: its exported model
    prompts = ["a red circle", "a blue square"]
    a = g.images(prompts, num_images=2, seed=0)
    assert a.shape == (4, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, g.images(prompts, num_images=2, seed=0))
    assert np.abs(a.astype(int) - g.images(prompts, num_images=2, seed=1).astype(int)).max() > 0
    # Prompt-major, image i of each prompt shares noise i: rows 0 and 2 differ only by the caption.
    assert np.abs(a[0].astype(int) - a[2].astype(int)).max() > 0
    one = g("a red circle", n=3, seed=0)
    assert one.shape == (3, 32, 32, 3)
    assert np.abs(one[:2].astype(int) - a[:2].astype(int)).max() <= 1  # image i does not depend on n
    # The exported generator is the EMA one, and sampling is exactly the model's functions.
    s = g.gan.encode_text(final["text_params"], g.tokenize(["a red circle"]))
    ref = gan_lib.to_uint8(g.gan.generate(final["gen_ema"], jnp.asarray(gan_lib.noise(0, [0], 8)), s))
    assert np.abs(np.asarray(ref[0]).astype(int) - a[0].astype(int)).max() <= 1


def test_generator_errors_and_workdir_without_export(trained, tmp_path):
    from dalle import model_dir
    from dalle.modeling.gan.api import GANGenerator

    _, workdir, _, _, _ = trained
    g = GANGenerator.from_checkpoint(workdir)
    for bad in ([""], ["   "], [], ["\u200b"]):
        with pytest.raises(GenerationError):
            g.images(bad)
    with pytest.raises(GenerationError, match="one string"):
        g(["a red circle"])
    with pytest.raises(GenerationError, match="positive integer"):
        g.images(["a red circle"], num_images=0)
    with pytest.raises(GenerationError, match="does not exist"):
        GANGenerator.from_checkpoint(str(tmp_path / "nowhere"))
    other = model_dir.save_model(str(tmp_path / "vq"), {"m": {"w": np.zeros(2, np.float32)}},
                                 ConfigDict({"model": {"kind": "vqgan"}}))
    with pytest.raises(GenerationError, match="kind 'vqgan', not a text-conditional GAN"):
        GANGenerator.from_checkpoint(other)
    # A workdir that has checkpoints but no export yet samples with the generator it would export.
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "model"))
    from_state = GANGenerator.from_checkpoint(copy)
    np.testing.assert_array_equal(from_state.images(["a red circle"], seed=0), g.images(["a red circle"], seed=0))


def test_sentence_encoder_is_the_clip_text_tower(tmp_path):
    """`model.text_encoder_init`: a CLIP's text params drop in unchanged and embed exactly as the CLIP does."""
    from dalle import model_dir
    from dalle.modeling.clip import model as clip_lib
    from dalle.train.tasks.gan import GANTask

    clip_cfg = dict(kind="clip", embed_dim=16, image_size=32, patch_size=16, vision_width=16, vision_layers=1,
                    vision_heads=2, vision_mlp_dim=32, context_length=12, vocab_size=64, text_width=16,
                    text_layers=1, text_heads=2, text_mlp_dim=32, activation="gelu", text_pool="eos", eos_id=1,
                    tokenizer="sentencepiece")
    clip = clip_lib.CLIP(clip_cfg)
    clip_params = clip.init(jax.random.PRNGKey(7))
    clip_dir = model_dir.save_model(str(tmp_path / "clip"), clip_params, ConfigDict({"model": clip_cfg}))
    task = GANTask(step_config({"text_encoder_init": clip_dir, "train_text_encoder": False}))
    state = task.load_pretrained(jax.jit(task.init_state)(jax.random.PRNGKey(0)))
    assert "text_opt" not in state  # a frozen encoder has no optimizer state
    tokens = jnp.array([[5, 6, 1] + [0] * 9, [9, 1] + [0] * 10])
    want = clip.encode_text(clip_params, tokens)
    want = want / jnp.linalg.norm(want, axis=-1, keepdims=True)
    np.testing.assert_allclose(task.gan.encode_text(state["text_params"], tokens), want, atol=1e-5)
    # A frozen encoder stays as loaded through a training step.
    batch = {"image": np.zeros((4, 32, 32, 3), np.uint8), "text_tokens": np.asarray(jnp.concatenate([tokens] * 2))}
    new, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(metrics["loss"]))
    jax.tree_util.tree_map(np.testing.assert_array_equal, new["text_params"], state["text_params"])
    # Another architecture is named, not broadcast into.
    other = GANTask(step_config({"text_encoder_init": clip_dir, "embed_dim": 8}))
    with pytest.raises(ValueError, match=r"does not fit the GAN's sentence encoder"):
        other.load_pretrained(jax.jit(other.init_state)(jax.random.PRNGKey(0)))


def test_xmc_contrastive_and_r1_terms_train():
    """XMC-GAN's terms and R1 switch on from the config and give finite, reported losses."""
    from dalle.train.tasks.gan import GANTask

    task = GANTask(step_config(contrastive_weight=1.0, r1_gamma=1.0, ema_decay=0.0))
    state = jax.jit(task.init_state)(jax.random.PRNGKey(0))
    assert "gen_ema" not in state
    rs = np.random.default_rng(0)
    batch = {"image": rs.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             "text_tokens": np.array([[5 + i, 1] + [0] * 10 for i in range(4)], np.int32)}
    _, m = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
    for key in ("r1", "d_contrastive_loss", "g_sentence_loss", "g_image_loss"):
        assert np.isfinite(float(m[key])) and float(m[key]) > 0, key
    assert float(m["d_loss"]) > float(m["d_adv_loss"])  # the extra terms are part of what D minimizes
    # R1 is |grad_x D(x, s)|^2 on the real pairs, averaged over the batch (computed here independently).
    from dalle.train.tasks.vqgan import images_to_model_range

    gan, d = task.gan, state["disc_params"]

    def r1(x):
        s = gan.encode_text(state["text_params"], batch["text_tokens"])
        g = jax.grad(lambda im: jnp.sum(gan.logits(d, gan.features(d, im), s)))(x)
        return jnp.mean(jnp.sum(jnp.square(g), axis=(1, 2, 3)))

    assert float(m["r1"]) == pytest.approx(float(jax.jit(r1)(images_to_model_range(batch["image"]))), rel=1e-4)


def test_dalle_generate_draws_with_a_gan_checkpoint(trained, tmp_path, capsys):
    """`dalle generate --checkpoint GAN_DIR` works like any model: the kind's direct generator, same images as the
    API for the same seed, and token-sampling flags refused."""
    from PIL import Image

    from dalle import cli
    from dalle.modeling.gan.api import GANGenerator

    _, workdir, _, _, _ = trained
    out = tmp_path / "grid.png"
    assert cli.main(["generate", "a red circle", "a blue square", "--checkpoint", workdir, "--n", "2", "--seed", "3",
                     "--out", str(out), "--out-dir", str(tmp_path / "each"), "--upscale", "1"]) == 0, \
        capsys.readouterr().err
    assert "GANGenerator" in capsys.readouterr().out
    assert np.asarray(Image.open(out)).shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)
    want = GANGenerator.from_checkpoint(workdir).images(["a blue square"], num_images=2, seed=4)  # prompt 1: seed + 1
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "each" / "001_01.png")), want[1])
    assert cli.main(["generate", "a red circle", "--checkpoint", workdir, "--condition-scale", "3", "--out",
                     str(out)]) == 2
    assert "--condition-scale does not apply" in capsys.readouterr().err
