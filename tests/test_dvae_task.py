"""dVAE training: the loss pieces on known inputs (logit-Laplace density, KL to the uniform prior, Gumbel-softmax),
the tau / beta schedules at their ends, a few steps lowering the loss, and a run of the one train loop whose
exported model loads as an image tokenizer. Tiny model, 16 px, 8 fake devices."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import kinds
from dalle.modeling.dvae import losses
from dalle.modeling.dvae import model as dvae_lib
from dalle.modeling.dvae.api import DVAETokenizer
from dalle.train.tasks.dvae import DVAETask
from dalle.train.tasks.vqgan import ArrayImageIterator

MODEL = dict(kind="dvae", resolution=16, n_hid=8, n_blk_per_group=1, n_init=8, vocab_size=16, group_count=3)


def make_config(**loss) -> ConfigDict:
    c = ConfigDict()
    c.name = "dvae_test"
    c.seed = 0
    c.model = ConfigDict(MODEL)
    c.train = ConfigDict(dict(batch_size=8, num_steps=3, log_every=1, checkpoint_every=3, progress_bar=False,
                              eval_every=0, sample_every=0, grad_clip_norm=0.0))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=3e-3))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=0))
    c.dvae_loss = ConfigDict({**dict(temperature_steps=10, kl_weight_steps=4, kl_weight_end=1.0, summary_images=4),
                              **loss})
    return config_lib.validate(c)


def toy_images(n: int = 32, seed: int = 0) -> np.ndarray:
    """Coloured rectangles on black, 16 px."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 16, 16, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 10, 2)
        h, w = rng.integers(4, 7, 2)
        out[i, y:y + h, x:x + w] = rng.integers(60, 256, 3)
    return out


def make_task(config) -> DVAETask:
    images = toy_images()
    return DVAETask(config, train_iterator_fn=lambda pi, pc: ArrayImageIterator(
        images, config.train.batch_size, seed=0, process_index=pi, process_count=pc))


# ----------------------------------------------------------------------------------------------------------------
# Loss pieces
# ----------------------------------------------------------------------------------------------------------------
def test_logit_laplace_nll_known_values_and_normalization():
    # x = 0.5, mu = 0, b = 1: -log(1 / (2 * 0.25)) = -log 2.
    stats = jnp.zeros((1, 1, 1, 2))
    np.testing.assert_allclose(losses.logit_laplace_nll(jnp.full((1, 1, 1, 1), 0.5), stats), [[[[-math.log(2)]]]],
                               atol=1e-6)
    # By hand at another point: x = 0.8, mu = 0.3, log b = -0.5.
    x, mu, log_b = 0.8, 0.3, -0.5
    want = abs(math.log(x / (1 - x)) - mu) / math.exp(log_b) + log_b + math.log(2 * x * (1 - x))
    got = losses.logit_laplace_nll(jnp.full((1, 1, 1, 1), x), jnp.asarray([mu, log_b]).reshape(1, 1, 1, 2))
    np.testing.assert_allclose(got, [[[[want]]]], rtol=1e-6)
    # A density on (0, 1): it integrates to 1 (midpoint rule in logit space, where it is a Laplace).
    u = np.linspace(-12, 12, 100_001, dtype=np.float64)  # the tails past +-12 hold < 1e-15
    xs = 1 / (1 + np.exp(-u))
    nll = np.asarray(losses.logit_laplace_nll(jnp.asarray(xs, jnp.float32).reshape(-1, 1, 1, 1),
                                              jnp.broadcast_to(jnp.asarray([0.7, -1.2]), (len(u), 1, 1, 2))))
    integral = np.sum(np.exp(-nll.reshape(-1).astype(np.float64)) * xs * (1 - xs)) * (u[1] - u[0])
    assert abs(integral - 1.0) < 1e-3, integral
    with pytest.raises(ValueError, match="decoder statistics have 3 channels; images with 3 need 6"):
        losses.logit_laplace_nll(jnp.zeros((1, 1, 1, 3)), jnp.zeros((1, 1, 1, 3)))


def test_kl_to_uniform():
    np.testing.assert_allclose(losses.kl_to_uniform(jnp.zeros((2, 3, 8))), np.zeros((2, 3)), atol=1e-6)
    peaked = jnp.asarray([[100.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(losses.kl_to_uniform(peaked), [math.log(4)], atol=1e-5)
    logits = jnp.asarray([[1.0, 2.0, 0.5]])
    p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
    np.testing.assert_allclose(losses.kl_to_uniform(logits), [np.sum(p * np.log(p * 3))], rtol=1e-5)


def test_gumbel_softmax_is_a_relaxed_categorical_sample():
    logits = jnp.log(jnp.asarray([0.6, 0.3, 0.1]))
    z = losses.gumbel_softmax(jax.random.key(0), jnp.broadcast_to(logits, (20000, 3)), 1.0)
    np.testing.assert_allclose(np.sum(np.asarray(z), axis=-1), 1.0, atol=1e-5)
    # At a low temperature each sample is nearly one-hot, and the argmax frequencies are the probabilities
    # (the Gumbel-max trick).
    cold = np.asarray(losses.gumbel_softmax(jax.random.key(1), jnp.broadcast_to(logits, (20000, 3)), 1.0 / 16))
    assert np.median(cold.max(axis=-1)) > 0.99
    np.testing.assert_allclose(np.bincount(cold.argmax(-1), minlength=3) / 20000, [0.6, 0.3, 0.1], atol=0.015)


def test_negative_elb_is_per_pixel_value_with_weighted_kl():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0.1, 0.9, (2, 8, 8, 3)), jnp.float32)
    stats = jnp.asarray(rng.normal(size=(2, 8, 8, 6)), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(2, 2, 2, 16)), jnp.float32)
    loss, nll, kl = losses.negative_elb(x, stats, logits, 2.5)
    want = (np.sum(losses.logit_laplace_nll(x, stats)) + 2.5 * np.sum(losses.kl_to_uniform(logits))) / (2 * 8 * 8 * 3)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(nll, np.mean(losses.logit_laplace_nll(x, stats)), rtol=1e-6)
    np.testing.assert_allclose(kl, np.mean(losses.kl_to_uniform(logits)), rtol=1e-6)


def test_schedules_at_their_ends():
    for shape in ("cosine", "linear"):
        assert float(losses.schedule(0, 1.0, 1 / 16, 100, shape)) == 1.0
        np.testing.assert_allclose(losses.schedule(100, 1.0, 1 / 16, 100, shape), 1 / 16)
        np.testing.assert_allclose(losses.schedule(10_000, 1.0, 1 / 16, 100, shape), 1 / 16)
        np.testing.assert_allclose(losses.schedule(50, 0.0, 6.6, 100, shape), 3.3, rtol=1e-6)
    np.testing.assert_allclose(losses.schedule(25, 0.0, 1.0, 100, "linear"), 0.25)
    np.testing.assert_allclose(losses.schedule(25, 0.0, 1.0, 100, "cosine"), 0.5 * (1 - math.cos(math.pi / 4)))
    assert float(losses.schedule(7, 0.0, 6.6, 0)) == pytest.approx(6.6)  # no ramp: the end value at once
    # The task's schedules, from its config; the defaults are the paper's.
    task = make_task(make_config())
    assert float(task.temperature(0)) == 1.0 and float(task.temperature(10)) == pytest.approx(1 / 16)
    assert float(task.kl_weight(0)) == 0.0 and float(task.kl_weight(4)) == pytest.approx(1.0)
    from dalle.modeling.dvae import schema

    d = schema.loss_defaults()
    assert (d.temperature_start, d.temperature_end, d.temperature_steps) == (1.0, 1 / 16, 150_000)
    assert (d.kl_weight_start, d.kl_weight_end, d.kl_weight_steps) == (0.0, 6.6, 5000)


def test_config_errors_name_the_key():
    with pytest.raises(config_lib.ConfigError) as e:
        make_config(temperature_end=0.0, kl_weight_shape="step")
    assert "dvae_loss.temperature_end = 0.0 must be positive" in str(e.value)
    assert "dvae_loss.kl_weight_shape = 'step' is not one of" in str(e.value)
    with pytest.raises(config_lib.ConfigError, match="dvae_loss is set but model.kind is not 'dvae'"):
        config_lib.validate(ConfigDict({"model": {"kind": "vqgan"}, "dvae_loss": {}}))
    with pytest.raises(config_lib.ConfigError, match="data.image_size = 20 is not divisible by the dVAE "
                                                     "downsampling factor 8"):
        config_lib.validate(ConfigDict({"model": {"kind": "dvae"}, "data": {"source": "shapes", "image_size": 20},
                                        "dvae_loss": {}}))
    preset = config_lib.load_config("configs/dvae_shapes.py")
    assert preset.model.kind == "dvae" and preset.data.image_size // 2 ** (preset.model.group_count - 1) == 8


# ----------------------------------------------------------------------------------------------------------------
# Steps and the loop
# ----------------------------------------------------------------------------------------------------------------
def test_steps_lower_the_loss_and_report_every_metric():
    task = make_task(make_config(kl_weight_end=0.1, temperature_steps=0, temperature_end=0.5))
    state = jax.jit(task.init_state)(jax.random.key(0))
    step = jax.jit(task.train_step)
    batch = {"image": jnp.asarray(toy_images(8))}
    # The reported loss is the relaxed negative ELB of the params before the update, with this step's tau, beta.
    first, _ = jax.jit(task.loss)(state["params"], batch["image"].astype(jnp.float32) / 255.0, jax.random.key(0),
                                  0.5, 0.0)
    history = []
    for i in range(8):
        state, metrics = step(state, batch, jax.random.key(i))
        history.append(jax.device_get(metrics))
    assert int(state["step"]) == 8
    np.testing.assert_allclose(history[0]["loss"], first, rtol=1e-5)
    for key in ("loss", "nll", "kl", "temperature", "kl_weight", "grad_norm", "psnr", "hard_nll", "codebook_usage",
                "perplexity"):
        assert all(np.isfinite(h[key]) for h in history), key
    assert history[-1]["loss"] < history[0]["loss"] - 0.1, [float(h["loss"]) for h in history]
    assert history[-1]["psnr"] > history[0]["psnr"], [float(h["psnr"]) for h in history]
    assert 0 < history[-1]["codebook_usage"] <= 1 and history[-1]["perplexity"] >= 1
    assert history[0]["kl_weight"] == 0.0 and history[-1]["kl_weight"] == pytest.approx(0.1)
    grid = task.summaries(state, 8)["reconstructions"]
    assert grid.dtype == np.uint8 and grid.shape == (1, 2 * 18 + 2, 4 * 18 + 2, 3)


def test_a_loop_run_exports_a_model_that_loads_as_an_image_tokenizer(tmp_path):
    from dalle.train import loop

    config = make_config()
    result = loop.train(config, str(tmp_path / "run"), task=make_task(config))
    assert result.step == 3 and result.status == "done" and np.isfinite(result.last_metrics["loss"])
    tok = kinds.load_image_tokenizer(str(tmp_path / "run"))
    assert isinstance(tok, DVAETokenizer)
    assert (tok.codebook_size, tok.tokens_per_side, tok.downsample_factor) == (16, 4, 4)
    images = toy_images(3)
    codes = tok.encode(images)
    assert codes.shape == (3, 4, 4) and codes.max() < 16
    assert tok.decode(codes).shape == (3, 16, 16, 3)
    # The exported params are the trained ones: the tokenizer encodes as the task's model does.
    from dalle import model_dir

    _, params = model_dir.load_model(str(tmp_path / "run" / "model"))
    want = jax.jit(dvae_lib.DVAE(dvae_lib.DVAEConfig.from_config(config)).encode)(
        params, jnp.asarray(images, jnp.float32) / 255.0)
    np.testing.assert_array_equal(codes, np.asarray(want))


def test_a_dvae_tokenizes_the_whole_text_to_image_pipeline(tmp_path):
    """The dVAE in the VQGAN's place (data.vqgan_checkpoint names a dVAE model dir): encode, train a decoder-only
    model a few steps, generate and decode, all through the image-tokenizer registry."""
    from dalle import generation, kinds
    from dalle.modeling.dvae.api import DVAETokenizer
    from dalle.train import loop
    from dalle.train.tasks.dalle import DalleTask
    from tests import tiny_pipeline

    config = tiny_pipeline.tiny_config(str(tmp_path), image_tokenizer="dvae")
    tok = kinds.load_image_tokenizer(config.data.vqgan_checkpoint)
    assert isinstance(tok, DVAETokenizer) and tok.tokens_per_side ** 2 == config.model.image_length
    workdir = str(tmp_path / "dalle")
    assert loop.train(config, workdir, DalleTask(config)).status == "done"
    gen = generation.Generator.from_checkpoint(workdir)
    assert isinstance(gen.vqgan, DVAETokenizer)
    codes = gen.codes(["a red circle"], num_images=2, seed=0, top_k=4)
    images = gen.decode(codes)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, gen.decode(codes))  # decoding is deterministic
    prompt = gen.completion_prompt(images[0], 2)  # the dVAE's codes of the top two rows of a picture
    np.testing.assert_array_equal(prompt, tok.encode(images[:1]).reshape(-1)[:16])
    completed = gen.codes(["a red circle"], num_images=1, seed=0, image_prompt=prompt)
    assert (completed[0, :16] == prompt).all()  # kept as given, the rest drawn
