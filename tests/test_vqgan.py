"""VQGAN model, quantizer, losses and the encode/decode API (small configs, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib, sharding
from dalle import model_dir as checkpoint
from dalle.modeling import param_check
from dalle.modeling.vqgan import model as vqgan_lib
from dalle.modeling.vqgan import losses

TINY = vqgan_lib.VQGANConfig(resolution=16, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                             z_channels=8, n_embed=32, embed_dim=4, norm_groups=4)


@pytest.fixture(scope="module")
def tiny_params():
    return jax.jit(vqgan_lib.VQGAN(TINY).init)(jax.random.key(0))


def tiny_config() -> ConfigDict:
    c = ConfigDict({"model": {"kind": "vqgan"}})
    for k, v in vqgan_lib.dataclasses.asdict(TINY).items():
        c.model[k] = v
    return config_lib.validate(c)


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------
def test_published_f16_config_has_76m_params_and_all_partition_rules_match():
    config = config_lib.load_config("configs/vqgan_f16_16384.py")
    cfg = vqgan_lib.VQGANConfig.from_config(config)
    assert (cfg.downsample_factor, cfg.token_grid) == (16, 16)
    abstract = jax.eval_shape(lambda: vqgan_lib.VQGAN(cfg).init(jax.random.key(0)))
    assert vqgan_lib.num_params(abstract) == 76_073_859
    assert abstract["encoder/down_4/attn_1/q"]["w"].shape == (1, 1, 512, 512)
    assert "encoder/down_3/attn_0/q" not in abstract  # attention only at side 16
    assert "decoder/up_4/block_0/nin_shortcut" not in abstract  # 512 -> 512 channels: no shortcut conv
    assert abstract["decoder/up_3/block_0/nin_shortcut"]["w"].shape == (1, 1, 512, 256)
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 1, 4))
    sh = sharding.param_shardings(abstract, sharding.get_partition_rules("vqgan"),
                                  sharding.DEFAULT_LOGICAL_RULES, mesh)
    assert sh["decoder/mid/block_1/conv1"]["w"].spec == jax.sharding.PartitionSpec(None, None, None, "model")
    assert sh["decoder/conv_out"]["w"].spec == jax.sharding.PartitionSpec()  # 3 channels: replicated


def test_shapes_and_param_names(tiny_params):
    m = vqgan_lib.VQGAN(TINY)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
    out, codes, recon = jax.jit(lambda p, x: (lambda o: (o, m.encode(p, x), m.decode_codes(p, o.quant.codes)))(
        m.apply(p, x)))(tiny_params, x)
    assert out.recon.shape == (2, 16, 16, 3) and out.recon.dtype == jnp.float32
    assert out.quant.codes.shape == (2, 8, 8) and out.quant.codes.dtype == jnp.int32
    assert out.z_e.shape == (2, 8, 8, 4) and out.last_features.shape == (2, 16, 16, 8)
    np.testing.assert_array_equal(codes, out.quant.codes)
    np.testing.assert_allclose(recon, out.recon, atol=1e-5)
    # Other sizes divisible by the factor work too (convs and attention do not depend on the side).
    assert jax.eval_shape(m.encode, tiny_params, jnp.zeros((1, 24, 32, 3))).shape == (1, 12, 16)
    for name in ("encoder/conv_in", "encoder/down_0/block_0/norm1", "encoder/down_0/downsample/conv",
                 "encoder/down_1/block_0/nin_shortcut", "encoder/down_1/attn_0/proj_out", "encoder/mid/attn_1/k",
                 "quant_conv", "quantize", "post_quant_conv", "decoder/up_1/attn_1/v", "decoder/up_1/upsample/conv",
                 "decoder/up_0/block_0/nin_shortcut", "decoder/norm_out", "decoder/conv_out"):
        assert name in tiny_params, name
    assert tiny_params["encoder/down_0/block_0/conv1"]["w"].shape == (3, 3, 8, 8)
    assert set(tiny_params["encoder/norm_out"]) == {"scale", "offset"}


def test_group_norm_matches_numpy():
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 8)).astype(np.float32)
    import haiku as hk

    gn = hk.without_apply_rng(hk.transform(lambda x: vqgan_lib.GroupNorm(4, 1e-6)(x)))
    assert set(gn.init(jax.random.key(0), x)["group_norm"]) == {"scale", "offset"}
    p = {"group_norm": {"scale": np.arange(8, dtype=np.float32), "offset": np.ones(8, np.float32)}}
    g = x.reshape(2, 3, 5, 4, 2)
    ref = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    ref = ref.reshape(x.shape) * np.arange(8) + 1
    np.testing.assert_allclose(gn.apply(p, x), ref, atol=1e-5)


def test_downsample_pads_bottom_right_only_and_upsample_is_nearest():
    import haiku as hk

    down = hk.without_apply_rng(hk.transform(lambda x: vqgan_lib.Downsample(True, jnp.float32)(x)))
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[2, 2] = 1.0  # picks the bottom-right pixel of each 3x3 window
    y = down.apply({"downsample/conv": {"w": w, "b": np.zeros(1, np.float32)}}, x)
    # Windows start at rows/cols 0 and 2; bottom-right taps are (2,2), (2,4=pad), (4=pad,2), (4,4).
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[10.0, 0.0], [0.0, 0.0]])
    w = np.zeros((3, 3, 1, 1), np.float32)
    w[0, 0] = 1.0  # top-left tap: no padding on the top/left
    y = down.apply({"downsample/conv": {"w": w, "b": np.zeros(1, np.float32)}}, x)
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], [[0.0, 2.0], [8.0, 10.0]])
    up = hk.without_apply_rng(hk.transform(lambda x: vqgan_lib.Upsample(False, jnp.float32)(x)))
    u = np.asarray(up.apply({}, x[:, :2, :2]))[0, :, :, 0]
    np.testing.assert_array_equal(u, [[0, 0, 1, 1], [0, 0, 1, 1], [4, 4, 5, 5], [4, 4, 5, 5]])


# ----------------------------------------------------------------------------------------------------------------
# Quantizer
# ----------------------------------------------------------------------------------------------------------------
def _quantize(z, e, beta=0.25, legacy=False, l2_norm=False):
    import haiku as hk

    cfg = vqgan_lib.VQGANConfig(n_embed=e.shape[0], embed_dim=e.shape[1], beta=beta, legacy_loss=legacy,
                                l2_norm_codes=l2_norm)
    q = hk.without_apply_rng(hk.transform(lambda z: vqgan_lib.VectorQuantizer(cfg)(z)))
    return lambda z, e: q.apply({"quantize": {"embeddings": e}}, z)


def test_group_norm_keeps_precision_on_a_large_offset():
    # Two-pass statistics: a mean 1000x the spread must not cancel the variance away.
    x = (1000.0 + np.random.default_rng(2).normal(size=(1, 4, 4, 64))).astype(np.float32)
    g = x.reshape(1, 4, 4, 32, 2).astype(np.float64)
    ref = ((g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6))
    got = vqgan_lib.group_norm(jnp.asarray(x), jnp.ones(64), jnp.zeros(64), 32, 1e-6)
    np.testing.assert_allclose(got, ref.reshape(x.shape), atol=2e-3)


def test_nearest_codes_take_the_first_of_tied_codes():
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], np.float32)  # codes 0/2 and 1/3 are equal
    z = np.array([[[[0.9, 0.1], [0.1, 0.9]], [[2.0, 0.0], [-1.0, 3.0]]]], np.float32)
    np.testing.assert_array_equal(vqgan_lib.nearest_codes(jnp.asarray(z), jnp.asarray(e)), [[[0, 1], [0, 1]]])
    rng = np.random.default_rng(3)
    z, e = rng.normal(size=(2, 3, 3, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    brute = np.argmin(((z[..., None, :] - e) ** 2).sum(-1), axis=-1)
    np.testing.assert_array_equal(vqgan_lib.nearest_codes(jnp.asarray(z), jnp.asarray(e)), brute)


def test_quantizer_codes_and_loss_on_a_fixed_input():
    e = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    z = np.array([[[[0.2, 0.1], [0.9, -0.3]], [[0.1, 1.5], [0.6, 0.0]]]], np.float32)  # [1, 2, 2, 2]
    out = _quantize(z, e)(z, e)
    np.testing.assert_array_equal(out.codes, [[[0, 1], [2, 1]]])
    # squared errors: (.04+.01) + (.01+.09) + (.01+.25) + (.16+0) = .57 over 8 elements
    mse = 0.57 / 8
    np.testing.assert_allclose(out.codebook_loss, mse, rtol=1e-5)
    np.testing.assert_allclose(out.commit_loss, mse, rtol=1e-5)
    np.testing.assert_allclose(out.loss, 1.25 * mse, rtol=1e-5)
    np.testing.assert_allclose(out.z_q, e[np.array([[[0, 1], [2, 1]]])], atol=1e-6)


@pytest.mark.parametrize("legacy", [False, True])
def test_quantizer_gradients_codebook_vs_commitment(legacy):
    e = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    z = np.array([[[[0.2, 0.1], [0.7, 0.4]]]], np.float32)  # codes 0, 1
    fn = _quantize(z, e, beta=0.25, legacy=legacy)
    gz, ge = jax.grad(lambda z, e: fn(z, e).loss, argnums=(0, 1))(z, e)
    q = e[[0, 1]].reshape(z.shape)
    w_commit, w_codebook = (1.0, 0.25) if legacy else (0.25, 1.0)
    np.testing.assert_allclose(gz, w_commit * 2 * (z - q) / 4, rtol=1e-5)
    np.testing.assert_allclose(ge, w_codebook * 2 * (q - z).reshape(2, 2) / 4, rtol=1e-5)


def test_l2_normalized_codebook_matches_by_cosine_and_decodes_unit_vectors():
    # By L2 distance z=(3, 0.5) is nearest to the short code (1, 0)... by direction it is the long (10, 2).
    e = np.array([[1.0, 0.0], [10.0, 2.0], [0.0, -1.0]], np.float32)
    z = np.array([[[[3.0, 0.5], [0.1, -5.0]]]], np.float32)
    plain = _quantize(z, e)(z, e)
    cosine = _quantize(z, e, l2_norm=True)(z, e)
    np.testing.assert_array_equal(plain.codes, [[[0, 2]]])
    np.testing.assert_array_equal(cosine.codes, [[[1, 2]]])
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    np.testing.assert_allclose(cosine.z_q, unit(e[[1, 2]])[None, None], atol=1e-6)
    np.testing.assert_allclose(cosine.codebook_loss, np.mean((unit(e[[1, 2]]) - unit(z[0, 0])) ** 2), rtol=1e-5)
    # The decode path (codes -> vectors) sees the same normalized vectors as the straight-through forward.
    import haiku as hk

    cfg = vqgan_lib.VQGANConfig(n_embed=3, embed_dim=2, l2_norm_codes=True)
    lookup = hk.without_apply_rng(hk.transform(lambda c: vqgan_lib.VectorQuantizer(cfg).lookup(c)))
    np.testing.assert_allclose(lookup.apply({"quantize": {"embeddings": e}}, cosine.codes), cosine.z_q, atol=1e-6)


def test_straight_through_gradient_is_identity():
    e = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    z = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype(np.float32)
    g = np.random.default_rng(2).normal(size=z.shape).astype(np.float32)
    fn = _quantize(z, e)
    gz, ge = jax.grad(lambda z, e: jnp.sum(fn(z, e).z_q * g), argnums=(0, 1))(z, e)
    np.testing.assert_allclose(gz, g, atol=1e-6)
    np.testing.assert_array_equal(ge, 0.0)  # z_q passes no gradient to the codebook


# ----------------------------------------------------------------------------------------------------------------
# Loss pieces
# ----------------------------------------------------------------------------------------------------------------
def test_loss_pieces_on_fixed_values():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, .5, 2] -> mean 5/6; relu(1 + fake) = [0, 1, 2] -> mean 1
    np.testing.assert_allclose(losses.hinge_d_loss(real, fake), 0.5 * (5 / 6 + 1.0), rtol=1e-6)
    np.testing.assert_allclose(losses.vanilla_d_loss(jnp.zeros(2), jnp.zeros(2)), np.log(2.0), rtol=1e-6)
    assert float(losses.adopt_weight(0.7, jnp.array(9), 10)) == 0.0
    assert float(losses.adopt_weight(0.7, jnp.array(10), 10)) == pytest.approx(0.7)
    np.testing.assert_allclose(losses.adaptive_weight(jnp.array([3.0, 4.0]), jnp.array([0.0, 10.0]), 0.8),
                               0.8 * 5 / (10 + 1e-4), rtol=1e-6)
    assert float(losses.adaptive_weight(jnp.ones(2), jnp.zeros(2), 1.0)) == 1e4  # clipped
    x = jnp.zeros((1, 2, 2, 3))
    np.testing.assert_allclose(losses.psnr(x, x + 0.2), 10 * np.log10(1 / 0.01), rtol=1e-5)  # 0.1 in [0, 1]
    np.testing.assert_allclose(jnp.mean(losses.pixel_loss(x, x + 0.5, 1.0, 2.0)), 0.5 + 2 * 0.25)
    # Foreground weights: 1 on the (median) background, 1 + w where a pixel is >= 0.5 away from it, linear between.
    img = (-jnp.ones((1, 4, 4, 3))).at[0, 0, 0].set(1.0).at[0, 0, 1, 0].set(-0.8)
    w = losses.foreground_weights(img, 3.0)
    assert w.shape == (1, 4, 4, 1)
    np.testing.assert_allclose(w[0, 0, 0, 0], 4.0)
    np.testing.assert_allclose(w[0, 0, 1, 0], 1.0 + 3.0 * 0.2 / 0.5, rtol=1e-6)
    np.testing.assert_allclose(w[0, 1:, :, 0], 1.0)
    counts, used, ppl = losses.code_stats(jnp.array([[0, 0, 1, 3]]), 8)
    np.testing.assert_array_equal(counts, [2, 1, 0, 1, 0, 0, 0, 0])
    assert float(used) == 3 / 8
    np.testing.assert_allclose(ppl, np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))), rtol=1e-6)


def test_discriminator_patch_logits():
    d = losses.make_discriminator(ndf=8, n_layers=2)
    x = jnp.zeros((2, 32, 32, 3))
    p = jax.jit(d.init)(jax.random.key(0), x)
    assert jax.eval_shape(d.apply, p, x).shape == (2, 6, 6, 1)  # 32 -> 16 -> 8 -> 7 -> 6
    logits = jax.jit(d.apply)(p, jnp.asarray(np.random.default_rng(0).uniform(-1, 1, x.shape), jnp.float32))
    assert float(jnp.std(logits)) > 0
    assert set(p) == {"discriminator/conv_0", "discriminator/conv_1", "discriminator/norm_1",
                      "discriminator/conv_2", "discriminator/norm_2", "discriminator/conv_3"}
    assert "b" not in p["discriminator/conv_1"]
    sharding.param_logical_axes(p, sharding.get_partition_rules("vqgan"))  # every param has a rule


def test_perceptual_net_from_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for idx, (cin, cout) in {0: (3, 4), 2: (4, 4), 5: (4, 8)}.items():  # conv, conv | pool | conv
        arrays[f"features.{idx}.weight"] = rng.normal(0, 0.3, (cout, cin, 3, 3)).astype(np.float32)
        arrays[f"features.{idx}.bias"] = np.zeros(cout, np.float32)
    arrays["lin0.model.1.weight"] = np.ones((1, 4, 1, 1), np.float32)
    np.savez(tmp_path / "net.npz", **arrays)
    dist = losses.load_perceptual_net(str(tmp_path / "net.npz"))
    x = jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
    y = jnp.asarray(rng.uniform(-1, 1, (2, 8, 8, 3)), jnp.float32)
    np.testing.assert_allclose(dist(x, x), 0.0, atol=1e-6)
    d = np.asarray(dist(x, y))
    assert d.shape == (2,) and np.all(d > 0)


# ----------------------------------------------------------------------------------------------------------------
# Config schema
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["configs/vqgan_f16_16384.py", "configs/vqgan_f16_16384.py:finetune",
                                  "configs/vqgan_f8_64.py", "configs/vqgan_f4_32.py", "configs/vqgan_f4_32.py:ema"])
def test_presets_validate(spec):
    c = config_lib.load_config(spec)
    cfg = vqgan_lib.VQGANConfig.from_config(c)
    if "data" in c:
        assert c.data.image_size // cfg.downsample_factor == (16 if spec.endswith(":finetune") else 8)


@pytest.mark.parametrize("override, message", [
    ("model.resolution=100", "model.resolution = 100 is not divisible by the downsampling factor 16"),
    ("model.attn_resolutions=(12,)", "model.attn_resolutions contains 12"),
    ("model.ch=48", "do not split into model.norm_groups = 32"),
    ("model.n_embed=0", "model.n_embed = 0 must be positive"),
])
def test_schema_errors_name_the_key(override, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_lib.load_config("configs/vqgan_f16_16384.py", [override])


def test_loss_schema_errors():
    with pytest.raises(config_lib.ConfigError, match="vqgan_loss.disc_loss = 'bce'"):
        config_lib.load_config("configs/vqgan_f4_32.py", ["vqgan_loss.disc_loss=bce"])
    with pytest.raises(config_lib.ConfigError, match="needs vqgan_loss.perceptual_net"):
        config_lib.load_config("configs/vqgan_f4_32.py", ["vqgan_loss.perceptual_weight=1.0"])
    with pytest.raises(config_lib.ConfigError, match="data.image_size = 34 is not divisible"):
        config_lib.load_config("configs/vqgan_f4_32.py", ["data.image_size=34"])


# ----------------------------------------------------------------------------------------------------------------
# API
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_params, tmp_path_factory):
    from dalle.modeling.vqgan.api import VQGANTokenizer

    d = tmp_path_factory.mktemp("tok")
    checkpoint.save_model(str(d), tiny_params, tiny_config())
    return VQGANTokenizer.from_checkpoint(str(d))


def test_api_encode_decode(tokenizer, tiny_params):
    tok = tokenizer
    assert (tok.downsample_factor, tok.codebook_size, tok.image_size, tok.tokens_per_side) == (2, 32, 16, 8)
    assert tok.mesh.size == 8  # batch-sharded over all (fake) devices
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)  # 3: padded to 8
    codes = tok.encode(images)
    assert codes.dtype == np.int32 and codes.shape == (3, 8, 8)
    ref = vqgan_lib.VQGAN(TINY).encode(tiny_params, jnp.asarray(images, jnp.float32) / 127.5 - 1)
    np.testing.assert_array_equal(codes, ref)
    np.testing.assert_array_equal(tok.encode(images.astype(np.float32) / 255.0), codes)
    out = tok.decode(codes)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    ref_img = np.clip((np.asarray(vqgan_lib.VQGAN(TINY).decode_codes(tiny_params, codes)) + 1) / 2, 0, 1)
    np.testing.assert_allclose(out, ref_img, atol=1e-5)
    np.testing.assert_array_equal(tok.decode(codes.reshape(3, 64)), out)
    assert tok.encode(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, 8, 8)
    assert tok.reconstruct(images).shape == (3, 16, 16, 3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((16, 16, 3), np.uint8), r"images must be \[batch, height, width, 3\], got shape \(16, 16, 3\)"),
    (np.zeros((1, 16, 16, 4), np.uint8), "images have 4 channels"),
    (np.zeros((1, 15, 16, 3), np.uint8), "image size 15x16 is not divisible by the VQGAN downsampling factor 2"),
    (np.full((1, 16, 16, 3), 255.0, np.float32), r"float images must be in \[0, 1\]"),
    (np.zeros((1, 16, 16, 3), np.int64), "must be uint8 in"),
])
def test_api_encode_errors(tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.encode(bad)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((1, 10), np.int32), "need a square n, got n = 10"),
    (np.full((1, 8, 8), 32, np.int32), r"codes must be in \[0, 32\)"),
    (np.zeros((1, 8, 8), np.float32), "codes must be integers"),
    (np.zeros((8, 8, 1, 1), np.int32), r"codes must be \[batch, h, w\]"),
])
def test_api_decode_errors(tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.decode(bad)


def test_api_rejects_params_of_another_architecture(tiny_params):
    from dalle.modeling.vqgan.api import VQGANTokenizer

    config = tiny_config()
    config.model.n_embed = 64
    with pytest.raises(param_check.ParamMismatchError, match=r"quantize/embeddings: \(32, 4\) != expected \(64, 4\)"):
        VQGANTokenizer(tiny_params, config)
    broken = {k: v for k, v in tiny_params.items() if k != "decoder/conv_out"}
    with pytest.raises(param_check.ParamMismatchError, match="missing .*decoder/conv_out/b, decoder/conv_out/w"):
        VQGANTokenizer(broken, tiny_config())
