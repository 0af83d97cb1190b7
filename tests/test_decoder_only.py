"""Decoder-only single-stream model: causal masking across text and image, cache, loss weights, sandwich-LN."""

import jax
import numpy as np
import pytest

from dalle import sharding
from dalle.modeling import model as model_lib
from dalle.modeling import presets
from tests.test_dalle_bart import batch_for, cached_logits


def small(**kw):
    cfg = presets.tiny_decoder_only(text_vocab_size=50, image_vocab_size=40, max_text_length=8, image_length=12)
    cfg.d_model, cfg.num_heads, cfg.ffn_dim = 32, 2, 48
    cfg.update(kw)
    return model_lib.build_model(cfg)


@pytest.mark.parametrize("variant", [
    {},
    {"ln_positions": "sandwich", "use_glu": True, "ln_type": "rmsnorm", "embedding_ln": True, "scan_layers": False},
])
def test_cached_decoding_equals_full_forward(variant):
    model = small(**variant)
    params = model_lib.random_params(model)
    batch = batch_for(model.config)
    full = jax.jit(model.logits)(params, batch)
    assert full.shape == (2, 12, 40)
    np.testing.assert_allclose(cached_logits(model, params, batch), full[:, 2:], atol=2e-4, rtol=2e-4)


def test_causal_masking_across_text_and_image():
    model = small()
    params = model_lib.random_params(model)
    batch = batch_for(model.config, pad_from=6)
    fwd = jax.jit(lambda p, b: model.apply(p, "__call__", b["text_tokens"], model.decoder_inputs(b["image_tokens"])))
    text_logits, image_logits = fwd(params, batch)
    # a later text token changes neither the text logits before it nor ... it does change all image logits
    changed = dict(batch, text_tokens=batch["text_tokens"].at[:, 4].set(3))
    t2, i2 = fwd(params, changed)
    np.testing.assert_array_equal(np.asarray(t2[:, :4]), np.asarray(text_logits[:, :4]))
    assert not np.allclose(t2[:, 4], text_logits[:, 4])
    assert not np.allclose(i2[:, 0], image_logits[:, 0])
    # a later image code never changes earlier image logits nor any text logits
    j = 5
    changed = dict(batch, image_tokens=batch["image_tokens"].at[:, j].set((batch["image_tokens"][:, j] + 1) % 40))
    t3, i3 = fwd(params, changed)
    np.testing.assert_array_equal(np.asarray(t3), np.asarray(text_logits))
    np.testing.assert_array_equal(np.asarray(i3[:, : j + 1]), np.asarray(image_logits[:, : j + 1]))
    assert not np.allclose(i3[:, j + 1], image_logits[:, j + 1])


def test_loss_weights_and_text_head():
    model = small()
    params = model_lib.random_params(model)
    batch = batch_for(model.config, pad_from=5)
    loss, m = jax.jit(lambda p, b: model.loss(p, b, None, is_training=False))(params, batch)
    np.testing.assert_allclose(loss, 0.125 * m["text_loss"] + 0.875 * m["image_loss"], rtol=1e-6)
    # text targets at padding do not count: changing the padding region's targets... only pads are ignored
    image_only = small(text_loss_weight=0.0, image_loss_weight=1.0)
    names = set(sharding.to_mapping(jax.eval_shape(image_only.init, jax.random.PRNGKey(0))))
    assert not any("text_head" in n for n in names)
    p2 = {k: v for k, v in params.items() if "text_head" not in k}
    l2, m2 = image_only.loss(p2, batch, None, is_training=False)
    np.testing.assert_allclose(l2, m["image_loss"], rtol=1e-6)
    assert "text_loss" not in m2
    assert image_only.encoder_param_filter("decoder_only/text_embed/embedding")
    assert not image_only.encoder_param_filter("decoder_only/image_embed/embedding")
    assert model.flops_per_example() > 6 * 20 * 32 * 32  # sanity: positive, grows with the model


def test_sharded_forward_equals_single_device():
    model = small()
    params = model_lib.random_params(model)
    batch = batch_for(model.config, batch=4)
    ref = jax.jit(model.logits)(params, batch)
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    shardings = sharding.param_shardings(params, model.partition_rules, sharding.DEFAULT_LOGICAL_RULES, mesh)
    with sharding.use_mesh(mesh):
        out = jax.jit(model.logits)(sharding.shard_put(params, shardings),
                                    sharding.host_to_global(jax.device_get(batch), mesh))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def _with_features(params, table):
    return jax.tree_util.tree_map_with_path(
        lambda p, leaf: table if sharding.path_str(p).endswith("/image_code_features") else leaf, params)


def test_code_features_enter_embedding_and_head():
    """model.image_code_features: a code's logit moves with its (frozen) feature row, and cached decoding still
    equals the full forward."""
    model = small(image_code_features=6)
    params = model_lib.random_params(model)
    shapes = {k: np.shape(v) for k, v in sharding.to_mapping(params).items() if k.endswith("/image_code_features")}
    assert list(shapes.values()) == [(40, 6)]
    table = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    params = _with_features(params, table)
    batch = batch_for(model.config)
    full = jax.jit(model.logits)(params, batch)
    np.testing.assert_allclose(cached_logits(model, params, batch), full[:, 2:], atol=2e-4, rtol=2e-4)
    moved = table.copy()
    moved[7] += 1.0
    other = np.asarray(jax.jit(model.logits)(_with_features(params, moved), batch))
    assert np.abs(other[..., 7] - np.asarray(full)[..., 7]).max() > 1e-4  # code 7's own logit moved


def test_from_features_weights_make_codes_that_look_alike_alike():
    """model.image_code_weights = "from_features": no per-code weights, so two codes with the same feature row get
    the same logit everywhere and feed the model the same embedding; cached decoding still equals the forward."""
    model = small(image_code_features=6, image_code_weights="from_features")
    params = model_lib.random_params(model)
    names = sharding.to_mapping(params)
    assert not any(k.endswith(("image_head/kernel", "image_embed/embedding")) for k in names)
    assert any(k.endswith("/image_bos") for k in names)
    table = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    table[5] = table[3]
    params = _with_features(params, table)
    batch = batch_for(model.config)
    full = np.asarray(jax.jit(model.logits)(params, batch))
    np.testing.assert_allclose(full[..., 5], full[..., 3], atol=1e-6)
    assert np.abs(full[..., 4] - full[..., 3]).max() > 1e-4
    np.testing.assert_allclose(cached_logits(model, params, batch), full[:, 2:], atol=2e-4, rtol=2e-4)
    swapped = dict(batch, image_tokens=np.where(np.asarray(batch["image_tokens"]) == 3, 5,
                                                np.asarray(batch["image_tokens"])))
    np.testing.assert_allclose(np.asarray(jax.jit(model.logits)(params, swapped)), full, atol=1e-5)


def test_from_features_needs_a_feature_table():
    from dalle.modeling import schema

    cfg = presets.tiny_decoder_only(text_vocab_size=50, image_vocab_size=40, max_text_length=8, image_length=12)
    cfg.image_code_weights = "from_features"
    assert "model.image_code_weights = 'from_features' needs model.image_code_features > 0" in list(
        schema.check_decoder_only(cfg, None))
    cfg.image_code_weights = "shared"
    assert any("expected 'per_code' or 'from_features'" in e for e in schema.check_decoder_only(cfg, None))
    cfg.image_code_feature_source = "pixels"
    assert any("image_code_feature_source = 'pixels': expected one of 'codebook', 'codebook_pixels'" in e
               for e in schema.check_decoder_only(cfg, None))


def test_the_model_boundary_checks_token_shapes_and_types():
    """chex contracts at `logits`/`loss`/`prefill`: a wrong text length, float ids or mismatched batches fail
    with a message naming the shapes, not deep inside an attention einsum."""
    cfg = presets.tiny_decoder_only(text_vocab_size=50, image_vocab_size=40, max_text_length=8, image_length=12)
    model = model_lib.build_model(cfg)
    params = model.init(jax.random.PRNGKey(0))
    good = {"text_tokens": np.ones((2, 8), np.int32), "image_tokens": np.zeros((2, 12), np.int32)}
    assert model.logits(params, good).shape == (2, 12, 40)
    for bad, needle in [({**good, "text_tokens": np.ones((2, 9), np.int32)}, r"\(2, 9\)"),
                        ({**good, "text_tokens": np.ones((2, 8), np.float32)}, "float32"),
                        ({**good, "image_tokens": np.zeros((3, 12), np.int32)}, "prefix")]:
        with pytest.raises(AssertionError, match=needle):
            model.logits(params, bad)
