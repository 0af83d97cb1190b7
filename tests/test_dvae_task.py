"""dVAE training: the loss pieces on known inputs (logit-Laplace density, KL to the uniform prior, Gumbel-softmax),
the tau / beta schedules at their ends, a few steps lowering the loss, and a run of the one train loop whose
exported model loads as an image tokenizer. Tiny model, 16 px, 8 fake devices."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import json
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
    # data.image_tokenizer names the kind the directory must hold, wherever it is loaded.
    from dalle.model_dir import CheckpointError

    assert config.data.image_tokenizer == "dvae"
    want = r"data.image_tokenizer = 'vqgan', but .* holds an image tokenizer of kind 'dvae'"
    with pytest.raises(CheckpointError, match=want):
        kinds.load_image_tokenizer(config.data.vqgan_checkpoint, "vqgan")
    with pytest.raises(CheckpointError, match=want):
        generation.image_tokenizer(config.data.vqgan_checkpoint, "vqgan")
    wrong = ConfigDict(config.to_dict())
    wrong.data.image_tokenizer = "vqgan"
    with pytest.raises(CheckpointError, match=want):
        generation.Generator.from_parts(wrong, gen.params)
    with pytest.raises(config_lib.ConfigError, match="data.image_tokenizer = 'dalle' is not a registered image "
                                                     r"tokenizer \(known: .*dvae.*vqgan"):
        wrong.data.image_tokenizer = "dalle"
        config_lib.validate(wrong)


# ----------------------------------------------------------------------------------------------------------------
# Options against codebook collapse (`dvae_loss`; all off by default)
# ----------------------------------------------------------------------------------------------------------------
def test_collapse_options_default_to_the_papers_recipe():
    from dalle.modeling.dvae import schema

    d = schema.loss_defaults()
    assert (d.straight_through, d.reconstruction, d.foreground_weight, d.kmeans_init, d.encoder_freeze_steps,
            d.restart_dead_codes) == (False, "logit_laplace", 0.0, False, 0, False)
    task = make_task(make_config())
    state = jax.jit(task.init_state)(jax.random.key(0))
    assert set(state) == {"params", "opt_state", "step"}  # no usage EMA without restarts
    assert task.pixel_weights(jnp.zeros((1, 16, 16, 3))) is None
    # The default loss is the paper's relaxed ELB, term by term.
    params = state["params"]
    images = jnp.asarray(toy_images(4), jnp.float32) / 255.0
    rng = jax.random.key(5)
    loss, aux = task.loss(params, images, rng, 0.7, 0.3)
    x = dvae_lib.map_pixels(images)
    logits = task.model.encoder_logits(params, x)
    stats = task.model.decoder_stats(params, losses.gumbel_softmax(rng, logits, 0.7))
    want, _, _ = losses.negative_elb(x, stats, logits, 0.3)
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_straight_through_is_one_hot_forward_and_relaxed_backward():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 3, 3, 16)), jnp.float32)
    z = losses.gumbel_softmax(jax.random.key(0), logits, 1.0)
    hard = losses.straight_through(z)
    np.testing.assert_array_equal(hard, jax.nn.one_hot(jnp.argmax(z, -1), 16))  # exactly one-hot
    # The backward pass is the relaxed sample's.
    c = jnp.asarray(rng.normal(size=(16,)), jnp.float32)
    sample = lambda l: losses.gumbel_softmax(jax.random.key(0), l, 1.0)  # noqa: E731
    g_st = jax.grad(lambda l: jnp.sum(losses.straight_through(sample(l)) * c))(logits)
    g_soft = jax.grad(lambda l: jnp.sum(sample(l) * c))(logits)
    np.testing.assert_allclose(g_st, g_soft, rtol=1e-6)
    assert float(jnp.max(jnp.abs(g_st))) > 1e-3


def test_straight_through_decoder_reads_the_sampled_code_and_the_encoder_gets_gradients():
    task = make_task(make_config(straight_through=True))
    params = task.init_params(jax.random.key(0))
    images = jnp.asarray(toy_images(4), jnp.float32) / 255.0
    rng = jax.random.key(3)
    loss, aux = task.loss(params, images, rng, 1.0, 0.5)
    # The forward pass is the ELB of the integer codes argmax(logits + g) (the Gumbel-max sample).
    g = jax.random.gumbel(rng, aux["logits"].shape, jnp.float32)
    codes = jnp.argmax(aux["logits"] + g, axis=-1)
    x = dvae_lib.map_pixels(images)
    want, _, _ = losses.negative_elb(x, task.model.decoder_stats(params, codes), aux["logits"], 0.5)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    soft, _ = make_task(make_config()).loss(params, images, rng, 1.0, 0.5)
    assert abs(float(soft) - float(loss)) > 1e-4  # the relaxed decoder input differs
    grads = jax.grad(lambda p: task.loss(p, images, rng, 1.0, 0.0)[0])(params)
    for m in ("encoder/input", "encoder/output/conv", "decoder/input"):
        assert float(jnp.max(jnp.abs(grads[m]["w"]))) > 0, m


def test_mse_reconstruction_is_a_squared_error_of_the_decoded_image():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(0.1, 0.9, (2, 8, 8, 3)), jnp.float32)
    stats = jnp.asarray(rng.normal(size=(2, 8, 8, 6)), jnp.float32)
    mean = 1 / (1 + np.exp(-np.asarray(stats[..., :3], np.float64)))
    np.testing.assert_allclose(losses.gaussian_nll(x, stats, 0.2), (np.asarray(x) - mean) ** 2 / 0.08, rtol=1e-4,
                               atol=1e-7)
    logits = jnp.zeros((2, 2, 2, 16))
    loss, nll, kl = losses.negative_elb(x, stats, logits, 0.0, reconstruction="mse", mse_sigma=0.2)
    np.testing.assert_allclose(loss, np.mean((np.asarray(x) - mean) ** 2 / 0.08), rtol=1e-5)
    np.testing.assert_allclose(nll, loss, rtol=1e-6)
    # The log-scales do not enter it; the logit-Laplace NLL depends on them.
    other = stats.at[..., 3:].add(1.0)
    assert float(losses.negative_elb(x, other, logits, 0.0, reconstruction="mse", mse_sigma=0.2)[0]) == float(loss)
    assert float(losses.negative_elb(x, other, logits, 0.0)[0]) != float(losses.negative_elb(x, stats, logits, 0.0)[0])
    with pytest.raises(ValueError, match="reconstruction 'l2' is not one of"):
        losses.negative_elb(x, stats, logits, 0.0, reconstruction="l2")
    # The task's loss uses it.
    task = make_task(make_config(reconstruction="mse", mse_sigma=0.2))
    params = task.init_params(jax.random.key(0))
    images = jnp.asarray(toy_images(2), jnp.float32) / 255.0
    rng = jax.random.key(0)
    got, aux = task.loss(params, images, rng, 1.0, 0.0)
    z = losses.gumbel_softmax(rng, aux["logits"], 1.0)
    want = jnp.mean(losses.gaussian_nll(dvae_lib.map_pixels(images), task.model.decoder_stats(params, z), 0.2))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_foreground_weight_weighs_object_pixels_more():
    task = make_task(make_config(foreground_weight=9.0))
    images = np.zeros((1, 16, 16, 3), np.float32)
    images[0, 4:8, 4:8] = [1.0, 0.2, 0.2]  # a red square on black
    images = jnp.asarray(images)
    w = task.pixel_weights(images)
    assert w.shape == (1, 16, 16, 1)
    np.testing.assert_allclose(w[0, 5, 5, 0], 10.0)
    np.testing.assert_allclose(w[0, 12, 12, 0], 1.0)
    x = dvae_lib.map_pixels(images)
    logits = jnp.zeros((1, 4, 4, 16))
    logit_x = jnp.log(x) - jnp.log1p(-x)
    exact = jnp.concatenate([logit_x, jnp.full_like(x, -1.0)], axis=-1)

    def extra_loss(y, xx, weights):
        base = float(losses.negative_elb(x, exact, logits, 0.0, weights)[0])
        return float(losses.negative_elb(x, exact.at[0, y, xx, 0].add(1.0), logits, 0.0, weights)[0]) - base

    np.testing.assert_allclose(extra_loss(5, 5, w) / extra_loss(12, 12, w), 10.0, rtol=1e-3)
    np.testing.assert_allclose(extra_loss(5, 5, None), extra_loss(12, 12, None), rtol=1e-4)  # unweighted: equal
    # The task's loss is weighted by it.
    params = task.init_params(jax.random.key(0))
    rng = jax.random.key(0)
    got, aux = task.loss(params, images, rng, 1.0, 0.0)
    stats = task.model.decoder_stats(params, losses.gumbel_softmax(rng, aux["logits"], 1.0))
    nll = losses.logit_laplace_nll(x, stats)
    np.testing.assert_allclose(got, jnp.sum(nll * w) / jnp.sum(jnp.broadcast_to(w, nll.shape)), rtol=1e-5)


def test_kmeans_init_gives_each_position_its_nearest_seed_after_the_first_step():
    task = make_task(make_config(kmeans_init=True, kmeans_logit_scale=10.0))
    state = jax.jit(task.init_state)(jax.random.key(0))
    images = jnp.asarray(toy_images(8), jnp.float32) / 255.0
    feats, _ = task.model.encoder_features_and_logits(state["params"], dvae_lib.map_pixels(images))
    step = jax.jit(task.train_step)
    new, _ = step(state, {"image": jnp.asarray(toy_images(8))}, jax.random.key(0))
    w = np.asarray(new["params"]["encoder/output/conv"]["w"][0, 0])  # [C, K]
    b = np.asarray(new["params"]["encoder/output/conv"]["b"])
    f = np.asarray(feats).reshape(-1, w.shape[0])
    s = 10.0 / np.mean(np.sum((f - f.mean(0)) ** 2, -1))
    seeds = w.T / s
    # Every column is a feature vector of the batch, its bias -|c|^2 / 2 scaled alike.
    nearest = np.min(np.sum((seeds[:, None] - f[None]) ** 2, -1), axis=1)
    assert np.all(nearest < 1e-6 * np.mean(np.sum(f ** 2, -1))), nearest
    np.testing.assert_allclose(b, -0.5 * s * np.sum(seeds ** 2, -1), rtol=1e-4, atol=1e-6)
    # So the argmax code of each position is its nearest seed, and distinct features get distinct codes.
    codes = np.argmax(f @ w + b, -1)
    np.testing.assert_array_equal(codes, np.argmin(np.sum((f[:, None] - seeds[None]) ** 2, -1), -1))
    assert len(np.unique(codes)) >= 12  # 16 codes, k-means++ seeds over 128 positions
    plain, _ = jax.jit(make_task(make_config()).train_step)(state, {"image": jnp.asarray(toy_images(8))},
                                                            jax.random.key(0))
    assert len(np.unique(np.argmax(f @ np.asarray(plain["params"]["encoder/output/conv"]["w"][0, 0]), -1))) < 12
    # Only the first step does it.
    later, _ = step(new, {"image": jnp.asarray(toy_images(8))}, jax.random.key(1))
    delta = np.abs(np.asarray(later["params"]["encoder/output/conv"]["w"][0, 0]) - w).max()
    assert 0 < delta < 0.01 * np.abs(w).max()


def test_encoder_freeze_steps_train_the_decoder_alone_first():
    task = make_task(make_config(encoder_freeze_steps=2))
    state = jax.jit(task.init_state)(jax.random.key(0))
    step = jax.jit(task.train_step)
    batch = {"image": jnp.asarray(toy_images(8))}
    moved = lambda a, b, prefix: max(float(jnp.max(jnp.abs(a[k]["w"] - b[k]["w"])))  # noqa: E731
                                     for k in a if k.startswith(prefix))
    s1, _ = step(state, batch, jax.random.key(0))
    s2, _ = step(s1, batch, jax.random.key(1))
    s3, _ = step(s2, batch, jax.random.key(2))
    assert moved(s2["params"], state["params"], "encoder/") == 0.0
    assert moved(s2["params"], state["params"], "decoder/") > 0.0
    assert moved(s3["params"], s2["params"], "encoder/") > 0.0  # step 2 trains it
    # The encoder's optimizer moments follow its gradients during the freeze (its updates are what is zeroed).
    mus = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(s2["opt_state"])[0]
           if "mu" in jax.tree_util.keystr(path) and "encoder/input" in jax.tree_util.keystr(path)]
    assert mus and all(float(jnp.max(jnp.abs(m))) > 0 for m in mus)
    # Weight decay does not move it either.
    cfg = make_config(encoder_freeze_steps=2)
    cfg.train.optimizer.name, cfg.train.optimizer.weight_decay = "adamw", 0.5
    decayed = make_task(config_lib.validate(cfg))
    d_state = jax.jit(decayed.init_state)(jax.random.key(0))
    d1, _ = jax.jit(decayed.train_step)(d_state, batch, jax.random.key(0))
    assert moved(d1["params"], d_state["params"], "encoder/") == 0.0


def test_dead_code_restart_splits_a_live_code_at_a_badly_reconstructed_position():
    margin = 0.5
    task = make_task(make_config(restart_dead_codes=True, restart_every=2, restart_margin=margin))
    state = jax.jit(task.init_state)(jax.random.key(0))
    assert state["usage"].shape == (16,)
    images = jnp.asarray(toy_images(8))
    feats, logits = task.model.encoder_features_and_logits(state["params"], dvae_lib.map_pixels(
        jnp.asarray(images, jnp.float32) / 255.0))
    codes = np.asarray(jnp.argmax(logits, -1)).reshape(-1)
    f = np.asarray(feats).reshape(-1, feats.shape[-1])
    live = sorted(set(codes))
    dead = [v for v in range(16) if v not in live]
    assert dead
    # The codes of this batch live (recently used), the others dead; step 1 -> 2 is a restart step.
    usage = jnp.asarray([1.0 / len(live) if v in live else 0.0 for v in range(16)], jnp.float32)
    state = dict(state, usage=usage, step=jnp.asarray(1, jnp.int32))
    new, metrics = jax.jit(task.train_step)(state, {"image": images}, jax.random.key(0))
    assert float(metrics["restarted_codes"]) == len(dead) and float(metrics["dead_codes"]) == len(dead)
    enc, dec = new["params"]["encoder/output/conv"], new["params"]["decoder/input"]
    w, b, rows = np.asarray(enc["w"][0, 0]), np.asarray(enc["b"]), np.asarray(dec["w"][0, 0])
    old_rows = np.asarray(state["params"]["decoder/input"]["w"][0, 0])
    for v in dead:
        assert np.linalg.norm(rows[v] - old_rows[v]) > 0.5 * np.linalg.norm(old_rows[v]), v
        # Its decoder row is a noisy copy of a live code's (as updated by this step) ...
        dists = [np.linalg.norm(rows[v] - rows[u]) for u in live]
        assert min(dists) < 0.3 * np.linalg.norm(rows[v]), (v, dists)
        u = live[int(np.argmin(dists))]
        # ... and its logit exceeds that code's by `margin` at one of that code's positions and by 0 at their
        # centroid (the features the restart saw are those of the params before the step).
        diff = f @ (w[:, v] - w[:, u]) + (b[v] - b[u])
        centroid = f[codes == u].mean(0)
        np.testing.assert_allclose(centroid @ (w[:, v] - w[:, u]) + (b[v] - b[u]), -1e-3 * margin,
                                   atol=1e-4 * margin)
        assert np.min(np.abs(diff[codes == u] - margin)) < 1e-3, (v, u)
        assert float(new["usage"][v]) == pytest.approx(1 / 16)
    for u in live:  # live codes keep their rows (only the optimizer step moves them)
        assert np.abs(rows[u] - old_rows[u]).max() < 0.01
    # Not a restart step: nothing is restarted, however dead.
    _, m2 = jax.jit(task.train_step)(dict(state, step=jnp.asarray(2, jnp.int32)), {"image": images},
                                     jax.random.key(0))
    assert float(m2["restarted_codes"]) == 0 and float(m2["dead_codes"]) == len(dead)


def test_collapse_option_config_errors():
    with pytest.raises(config_lib.ConfigError) as e:
        make_config(foreground_weight=-1.0, reconstruction="l2", restart_every=0, usage_decay=1.0,
                    encoder_freeze_steps=-1, kmeans_logit_scale=0.0)
    for want in ("dvae_loss.foreground_weight = -1.0 must be >= 0",
                 "dvae_loss.reconstruction = 'l2' is not one of ('logit_laplace', 'mse')",
                 "dvae_loss.restart_every = 0 must be positive", "dvae_loss.usage_decay = 1.0 must be in [0, 1)",
                 "dvae_loss.encoder_freeze_steps = -1 must be >= 0",
                 "dvae_loss.kmeans_logit_scale = 0.0 must be positive"):
        assert want in str(e.value), want


def test_the_preset_uses_the_options_that_work():
    preset = config_lib.load_config("configs/dvae_shapes.py")
    lc = preset.dvae_loss
    assert lc.reconstruction == "mse" and lc.foreground_weight > 0 and lc.kmeans_init
    assert lc.restart_dead_codes and lc.encoder_freeze_steps > 0


def test_restarts_stop_at_restart_until():
    task = make_task(make_config(restart_dead_codes=True, restart_every=2, restart_until=4))
    state = jax.jit(task.init_state)(jax.random.key(0))
    images = jnp.asarray(toy_images(8))
    dead_usage = jnp.zeros((16,), jnp.float32)  # every code dead
    step = jax.jit(task.train_step)
    _, before = step(dict(state, usage=dead_usage, step=jnp.asarray(1, jnp.int32)), {"image": images},
                     jax.random.key(0))
    _, at = step(dict(state, usage=dead_usage, step=jnp.asarray(3, jnp.int32)), {"image": images},
                 jax.random.key(0))
    assert float(before["restarted_codes"]) > 0  # step 2 < 4: restarts
    assert float(at["restarted_codes"]) == 0 and float(at["dead_codes"]) > 0  # step 4: none, however dead


def test_the_emoji_preset_is_the_shapes_recipe_on_emoji():
    shapes_preset = config_lib.load_config("configs/dvae_shapes.py")
    emoji = config_lib.load_config("configs/dvae_emoji.py:root=/tmp/somewhere")
    assert emoji.model.kind == "dvae" and emoji.model.vocab_size == 1024
    assert emoji.dvae_loss.to_dict() == shapes_preset.dvae_loss.to_dict()
    assert emoji.data.source == "emoji" and emoji.data.data_dir == "/tmp/somewhere/tfds"
    assert config_lib.load_config("configs/dvae_emoji.py:folder").data.source == "folder"


def test_a_restart_at_a_codes_centroid_still_splits_it():
    """A code whose positions all share one feature vector (flat background) has no direction to split along: the
    restarted code must not copy it exactly (it would tie everywhere and take all of its positions, or none)."""
    task = make_task(make_config(restart_dead_codes=True, restart_every=1, restart_margin=1.0))
    params = task.init_params(jax.random.key(0))
    c = 8
    feats = jnp.ones((1, 4, 4, c), jnp.float32)  # every position: the same features, code 0
    codes = jnp.zeros((1, 4, 4), jnp.int32)
    err = jnp.ones((1, 4, 4), jnp.float32)
    enc = {"w": jnp.zeros((1, 1, c, 16), jnp.float32).at[0, 0, :, 0].set(1.0), "b": jnp.zeros((16,), jnp.float32)}
    params = {**params, "encoder/output/conv": enc}
    restart = jnp.arange(16) == 5
    new, usage = task.restart_dead_codes(params, jnp.zeros((16,)), codes, err, restart, jax.random.key(1), feats)
    w, b = np.asarray(new["encoder/output/conv"]["w"][0, 0]), np.asarray(new["encoder/output/conv"]["b"])
    assert np.abs(w[:, 5] - w[:, 0]).max() > 1e-3  # not a copy: a direction of its own
    f = np.ones((c,), np.float32)
    assert f @ w[:, 0] + b[0] > f @ w[:, 5] + b[5]  # code 0 keeps its own positions
    # The random direction has the features' scale (their spread is 0 here: a thousandth of their mean square),
    # so the step is margin / |d| along it ...
    scale = 1e-3 * c
    step = w[:, 5] - w[:, 0]
    assert 0.3 < np.linalg.norm(step) * np.sqrt(scale) < 3.0, np.linalg.norm(step)
    # ... and off the centroid, on its side, the restarted code wins by margin * (alpha - 1/1000).
    for alpha, wins in ((0.5, True), (-0.5, False)):
        g = f + alpha * step / np.sum(step ** 2)
        gap = (g @ w[:, 5] + b[5]) - (g @ w[:, 0] + b[0])
        np.testing.assert_allclose(gap, alpha - 1e-3, atol=1e-3)
        assert (gap > 0) == wins
    assert float(usage[5]) == pytest.approx(1 / 16) and float(usage[0]) == 0.0


class _Stop(RuntimeError):
    pass


def test_a_run_with_restarts_resumes_exactly(tmp_path):
    """The usage EMA is part of the checkpointed state: a run stopped after its step-2 checkpoint and resumed ends
    where an uninterrupted one does (restarts every step, so a lost or reset EMA would change the codes)."""
    from dalle.train import loop
    from dalle.train.task import DataIterator
    from dalle.train.tasks.vqgan import ArrayImageIterator

    opts = dict(restart_dead_codes=True, restart_every=1, usage_decay=0.5, dead_code_threshold=0.5)
    config = make_config(**opts)
    config.train.checkpoint_every = 2
    config.train.num_steps = 4
    loop.train(config, str(tmp_path / "a"), task=make_task(config))

    class StopsAtStep3(DataIterator):
        def __init__(self, inner):
            self.inner, self.n = inner, 0

        def __next__(self):
            self.n += 1
            if self.n == 4:  # the batch of step 4, after step 2's checkpoint
                raise _Stop()
            return next(self.inner)

        def get_state(self):
            return self.inner.get_state()

        def set_state(self, state):
            self.inner.set_state(state)

    task = make_task(config)
    task.train_data = lambda pi, pc: StopsAtStep3(ArrayImageIterator(toy_images(), 8, seed=0, process_index=pi,
                                                                     process_count=pc))
    with pytest.raises(_Stop):
        loop.train(config, str(tmp_path / "b"), task=task)
    loop.train(config, str(tmp_path / "b"), task=make_task(config))
    from dalle import model_dir

    with open(tmp_path / "a" / "metrics.jsonl") as fh:  # restarts happened after the resumed step too
        restarted = {r["step"]: r["train/restarted_codes"] for r in map(json.loads, fh) if "train/restarted_codes" in r}
    assert restarted.get(3, 0) > 0 or restarted.get(4, 0) > 0, restarted
    _, pa = model_dir.load_model(str(tmp_path / "a" / "model"))
    _, pb = model_dir.load_model(str(tmp_path / "b" / "model"))
    for k in pa:
        for n in pa[k]:
            np.testing.assert_array_equal(np.asarray(pa[k][n]), np.asarray(pb[k][n]), err_msg=f"{k}/{n}")
