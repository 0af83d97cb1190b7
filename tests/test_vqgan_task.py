"""VQGAN training task: generator gradients (adaptive weight), GAN start, EMA / dead-code restarts, a few steps
lowering the loss, exact resume, summaries, export and finetune_from. Tiny model, 16 px, 8 fake devices."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib, sharding
from dalle import model_dir as checkpoint
from dalle.train.tasks.vqgan import ArrayImageIterator, VQGANTask, images_to_model_range

# One level (f1) and no extra attention: the blocks are tested in test_vqgan.py / test_convert_vqgan.py, and a
# smaller graph keeps the train-step compile short on a 2-core CPU.
MODEL = dict(kind="vqgan", resolution=16, ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(),
             z_channels=8, n_embed=32, embed_dim=4, norm_groups=4)


def make_config(**loss) -> ConfigDict:
    c = ConfigDict()
    c.name = "vqgan_test"
    c.model = ConfigDict(MODEL)
    c.train = ConfigDict(dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2, progress_bar=False,
                              grad_clip_norm=0.0, eval_every=0))
    c.train.optimizer = ConfigDict(dict(name="adam", lr=3e-3, b1=0.5, b2=0.9))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=0))
    c.vqgan_loss = ConfigDict({**dict(disc_start=1000, disc_ndf=8, disc_num_layers=1, summary_images=4), **loss})
    return config_lib.validate(c)


def toy_images(n: int = 32, seed: int = 0) -> np.ndarray:
    """Colored rectangles on black: easy to reconstruct, so a few steps show progress."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 16, 16, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, 10, 2)
        h, w = rng.integers(4, 7, 2)
        out[i, y:y + h, x:x + w] = rng.integers(60, 256, 3)
    return out


def make_task(config, images=None) -> VQGANTask:
    images = toy_images() if images is None else images
    return VQGANTask(config, train_iterator_fn=lambda pi, pc: ArrayImageIterator(
        images, config.train.batch_size, seed=0, process_index=pi, process_count=pc))


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh(("data", "fsdp", "model"), (-1, 1, 1))


def jit_task(task, mesh):
    with sharding.use_mesh(mesh):
        abstract = jax.eval_shape(task.init_state, jax.random.key(0))
        sh = task.state_shardings(abstract, mesh)
        state = jax.jit(task.init_state, out_shardings=sh)(jax.random.key(0))
    batch_sh = {"image": sharding.batch_sharding(mesh, 4)}
    step = jax.jit(task.train_step, in_shardings=(sh, batch_sh, sharding.replicated(mesh)),
                   out_shardings=(sh, sharding.replicated(mesh)))

    def run(state, batch, rng):
        with sharding.use_mesh(mesh):
            return step(state, {"image": jax.device_put(batch["image"], batch_sh["image"])}, rng)

    return state, run


def test_generator_grads_match_plain_autodiff():
    """One vjp + the conv_out trick == taming's recipe written with jax.grad on the whole model."""
    task = make_task(make_config(disc_weight=0.8, l2_weight=0.5, codebook_weight=0.7))
    state = jax.jit(task.init_state)(jax.random.key(1))
    x = images_to_model_range(jnp.asarray(toy_images(4)))
    gp, dp = state["gen_params"], state["disc_params"]
    grads, _, m = jax.jit(lambda gp, dp: task.generator_grads(gp, dp, x, None, jnp.array(True)))(gp, dp)

    def parts(p):
        out = task.model.apply(p, x, None, train=True)
        nll = jnp.mean(jnp.abs(x - out.recon)) + 0.5 * jnp.mean(jnp.square(x - out.recon))
        g = -jnp.mean(task.disc.apply(dp, out.recon))
        return nll, g, out.quant.loss

    def last_layer_grad(i):
        def f(w):
            p = {**gp, "decoder/conv_out": {**gp["decoder/conv_out"], "w": w}}
            return parts(p)[i]
        return jax.grad(f)(gp["decoder/conv_out"]["w"])

    def reference(gp):
        g_nll, g_g = last_layer_grad(0), last_layer_grad(1)
        d_weight = 0.8 * jnp.clip(jnp.linalg.norm(g_nll) / (jnp.linalg.norm(g_g) + 1e-4), 0, 1e4)

        def total(p):
            nll, g, q = parts(p)
            return nll + d_weight * g + 0.7 * q

        return d_weight, jax.value_and_grad(total)(gp)

    d_weight, (ref_loss, ref_grads) = jax.jit(reference)(gp)
    np.testing.assert_allclose(m["d_weight"], d_weight, rtol=1e-4)
    assert float(m["d_weight"]) > 0
    np.testing.assert_allclose(m["loss"], ref_loss, rtol=1e-5)
    for path, a in sharding.to_mapping(grads).items():
        b = sharding.to_mapping(ref_grads)[path]
        np.testing.assert_allclose(a, b, atol=1e-6 + 1e-4 * float(jnp.max(jnp.abs(b))), err_msg=path)


def _leaves(tree):
    return sharding.to_mapping(jax.device_get(tree))


def test_gan_start_loss_decrease_and_exact_resume(mesh, tmp_path):
    config = make_config(disc_start=6)
    task = make_task(config)
    state, step = jit_task(task, mesh)
    it = task.train_data(0, 1)
    history, saved = [], None
    disc0 = _leaves(state["disc_params"])
    for i in range(8):
        if i == 4:  # checkpoint: state + data position, as the loop does
            checkpoint.save_model(str(tmp_path / "ckpt"), state, config, extra={"data": it.get_state()})
        state, metrics = step(state, next(it), jax.random.fold_in(jax.random.key(7), i))
        history.append(jax.device_get(metrics))
        if i == 5:  # last step before the discriminator starts: it has not moved, GAN terms are off
            for path, a in _leaves(state["disc_params"]).items():
                np.testing.assert_array_equal(a, disc0[path], err_msg=path)
    assert all(h["d_weight"] == 0 and h["d_loss"] == 0 and h["disc_factor"] == 0 for h in history[:6])
    assert history[6]["d_weight"] > 0 and history[6]["d_loss"] > 0 and history[6]["disc_factor"] == 1.0
    for path, a in _leaves(state["disc_params"]).items():
        if path != "discriminator/conv_2/b":  # hinge gradient of the last bias is 0 while all |logits| < 1
            assert not np.array_equal(a, disc0[path]), path
    assert int(state["step"]) == 8
    # Reconstruction improves over the first steps (no GAN term yet).
    assert history[5]["rec_loss"] < 0.8 * history[0]["rec_loss"], [h["rec_loss"] for h in history]
    assert history[5]["psnr"] > history[0]["psnr"]
    for key in ("loss", "rec_loss", "psnr", "codebook_usage", "perplexity", "quant_loss", "g_loss", "d_loss",
                "logits_real", "logits_fake", "dead_codes", "grad_norm"):
        assert np.isfinite(history[-1][key]), key
    assert 0 < history[-1]["codebook_usage"] <= 1 and history[-1]["perplexity"] >= 1

    # Resume from step 4 in a fresh task + iterator: the same state after step 8, bit for bit.
    task2 = make_task(config)
    abstract = jax.eval_shape(task2.init_state, jax.random.key(0))
    restored = checkpoint.load_params(str(tmp_path / "ckpt"), target=abstract)
    it2 = task2.train_data(0, 1)
    it2.set_state(checkpoint.read_extra(str(tmp_path / "ckpt"))["data"])
    for i in range(4, 8):
        restored, _ = step(restored, next(it2), jax.random.fold_in(jax.random.key(7), i))
    final = _leaves(state)
    for path, a in _leaves(restored).items():
        np.testing.assert_array_equal(a, final[path], err_msg=path)


def test_ema_codebook_update_and_dead_code_restart():
    task = make_task(make_config(use_ema=True, ema_decay=0.9, restart_dead_codes=True, restart_every=1,
                                 dead_code_threshold=1.0))
    state = jax.jit(task.init_state)(jax.random.key(0))
    batch = {"image": jnp.asarray(toy_images(8))}
    new, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(3))
    out = jax.jit(task.model.apply)(state["gen_params"], images_to_model_range(batch["image"]))
    codes = np.asarray(out.quant.codes).reshape(-1)
    z = np.asarray(out.z_e).reshape(-1, 4)
    e0 = np.asarray(state["gen_params"]["quantize"]["embeddings"])
    counts = np.bincount(codes, minlength=32).astype(np.float32)
    sums = np.zeros((32, 4), np.float32)
    np.add.at(sums, codes, z)
    cs, es = 0.9 + 0.1 * counts, 0.9 * e0 + 0.1 * sums
    smoothed = (cs + 1e-5) / (cs.sum() + 32e-5) * cs.sum()
    expected = es / smoothed[:, None]
    usage = 0.99 / 32 + 0.01 * counts / counts.sum()
    dead = usage * 32 < 1.0
    emb = np.asarray(new["gen_params"]["quantize"]["embeddings"])
    assert dead.any() and (~dead).any()
    np.testing.assert_allclose(emb[~dead], expected[~dead], rtol=1e-4, atol=1e-6)
    # Restarted codes are encoder outputs of this batch, and their usage is reset.
    for k in np.flatnonzero(dead):
        assert np.min(np.abs(z - emb[k]).max(axis=1)) < 1e-5, k
    np.testing.assert_allclose(np.asarray(new["usage"])[dead], 1 / 32)
    assert float(metrics["restarted_codes"]) == dead.sum()


def test_quantizer_warmup_bypasses_the_codebook_then_seeds_it_by_kmeans_plus_plus():
    task = make_task(make_config(quantize_start=2, restart_dead_codes=True, restart_every=1,
                                 dead_code_threshold=1.0))
    state = jax.jit(task.init_state)(jax.random.key(0))
    step = jax.jit(task.train_step)
    batch = {"image": jnp.asarray(toy_images(8))}
    x = images_to_model_range(batch["image"])
    # Warm-up step: the decoder sees the encoder output itself, no quantizer loss, codebook and usage untouched.
    out_plain = jax.jit(lambda p, x: task.model.apply(p, x, quantize=False))(state["gen_params"], x)
    out_vq = jax.jit(task.model.apply)(state["gen_params"], x)
    assert not np.allclose(out_plain.recon, out_vq.recon)
    np.testing.assert_allclose(out_plain.recon, task.model.apply(state["gen_params"], x, quantize=jnp.bool_(False))
                               .recon, atol=1e-5)
    s1, m1 = step(state, batch, jax.random.key(1))
    assert float(m1["quant_loss"]) == 0.0 and float(m1["restarted_codes"]) == 0.0
    np.testing.assert_array_equal(s1["gen_params"]["quantize"]["embeddings"],
                                  state["gen_params"]["quantize"]["embeddings"])
    np.testing.assert_array_equal(s1["usage"], state["usage"])
    # Last warm-up step: every code becomes a distinct encoder output of that batch.
    s2, _ = step(s1, batch, jax.random.key(2))
    z = np.asarray(jax.jit(task.model.apply)(s1["gen_params"], x).z_e).reshape(-1, 4)
    emb = np.asarray(s2["gen_params"]["quantize"]["embeddings"])
    for k in range(32):
        assert np.min(np.abs(z - emb[k]).max(axis=1)) < 1e-5, k
    assert len(np.unique(emb.round(6), axis=0)) == 32
    # From then on the codebook is in use: a non-zero quantizer loss.
    _, m3 = step(s2, batch, jax.random.key(3))
    assert float(m3["quant_loss"]) > 0.0


def test_kmeans_plus_plus_seeds_rare_distinct_points():
    from dalle.modeling.vqgan import losses

    # 500 near-identical background vectors and 3 far apart "objects": 4 seeds must cover all 4 groups.
    rng = np.random.default_rng(0)
    background = rng.normal(scale=1e-3, size=(500, 2))
    objects = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    points = jnp.asarray(np.concatenate([background, objects]), jnp.float32)
    seeds = np.asarray(jax.jit(losses.kmeans_plus_plus, static_argnums=1)(points, 4, jax.random.key(0)))
    for o in objects:
        assert np.min(np.abs(seeds - o).max(axis=1)) < 1e-6, o
    assert np.min(np.abs(seeds).max(axis=1)) < 0.01  # and one background seed
    # Every seed is one of the points.
    for sd in seeds:
        assert np.min(np.abs(np.asarray(points) - sd).max(axis=1)) < 1e-6


@pytest.mark.slow
def test_resume_through_the_train_loop(tmp_path):
    loop = pytest.importorskip("dalle.train.loop")
    config = make_config(disc_start=1)
    loop.train(config, str(tmp_path / "straight"), task=make_task(config))
    short = ConfigDict(config.to_dict())
    short.train.num_steps = 2
    try:
        loop.train(short, str(tmp_path / "resumed"), task=make_task(short))
        loop.train(config, str(tmp_path / "resumed"), task=make_task(config))
    except Exception as e:  # a config diff on num_steps may be refused by the loop: resume with the same config
        if "num_steps" not in str(e):
            raise
        pytest.skip(f"loop refuses num_steps changes on resume: {e}")
    a = checkpoint.load_model(str(tmp_path / "straight" / "model"))[1]
    b = checkpoint.load_model(str(tmp_path / "resumed" / "model"))[1]
    for path, x in sharding.to_mapping(a).items():
        np.testing.assert_array_equal(x, sharding.to_mapping(b)[path], err_msg=path)


def test_summaries_export_and_finetune_from(tmp_path, mesh):
    from dalle.modeling.vqgan.api import VQGANTokenizer

    config = make_config()
    task = make_task(config)
    state = jax.jit(task.init_state)(jax.random.key(5))
    grid = task.summaries(state, 0)["reconstructions"]
    assert grid.dtype == np.uint8 and grid.shape == (1, 2 * 18 + 2, 4 * 18 + 2, 3)  # originals over recons
    np.testing.assert_array_equal(grid[0, 2:18, 2:18], toy_images()[np.random.default_rng([0, 0]).permutation(32)[0]])
    params, model_config = task.export_params(state)
    checkpoint.save_model(str(tmp_path / "model"), params, model_config)
    tok = VQGANTokenizer.from_checkpoint(str(tmp_path / "model"))
    assert (tok.codebook_size, tok.downsample_factor) == (32, 1)

    ft = make_task(make_config(finetune_from=str(tmp_path / "model"), use_ema=True))
    with sharding.use_mesh(mesh):
        abstract = jax.eval_shape(ft.init_state, jax.random.key(0))
        fresh = jax.jit(ft.init_state, out_shardings=ft.state_shardings(abstract, mesh))(jax.random.key(9))
    loaded = ft.load_pretrained(fresh)
    for path, x in sharding.to_mapping(params).items():
        np.testing.assert_array_equal(sharding.to_mapping(loaded["gen_params"])[path], x, err_msg=path)
    np.testing.assert_array_equal(loaded["ema"]["embed_sum"], params["quantize"]["embeddings"])

    other = make_config(finetune_from=str(tmp_path / "model"))
    other.model.n_embed = 64
    with pytest.raises(ValueError, match="another architecture: n_embed: 32 != 64"):
        make_task(other).load_pretrained({})  # the architecture is checked before the state is touched


def test_state_shardings_on_a_model_parallel_mesh():
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (4, 1, 2))
    task = make_task(make_config())
    with sharding.use_mesh(mesh):
        abstract = jax.eval_shape(task.init_state, jax.random.key(0))
        sh = task.state_shardings(abstract, mesh)
    spec = sh["gen_params"]["decoder/mid/block_1/conv1"]["w"].spec
    assert spec == jax.sharding.PartitionSpec(None, None, None, "model")
    mu = sh["gen_opt"][0].mu["decoder/mid/block_1/conv1"]["w"].spec  # adam's moments follow their params
    assert mu == spec
    assert sh["usage"].spec == jax.sharding.PartitionSpec()
