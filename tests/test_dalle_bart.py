"""DalleBart (dalle-mini's encoder-decoder): switches, causal masking, KV-cached decoding, sharding, configs."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import sharding
from dalle.modeling import model as model_lib
from dalle.modeling import presets


def batch_for(cfg, batch=2, seed=0, pad_from=5):
    rs = np.random.RandomState(seed)
    text = rs.randint(1, cfg.get("encoder_vocab_size", cfg.get("text_vocab_size")), (batch, cfg.max_text_length))
    text[:, pad_from:] = 0
    image = rs.randint(0, cfg.image_vocab_size, (batch, cfg.image_length))
    return {"text_tokens": jnp.asarray(text, jnp.int32), "image_tokens": jnp.asarray(image, jnp.int32)}


def random_params(model, seed=0):
    return model_lib.random_params(model, seed)


def init(model, seed=0):
    return jax.jit(model.init)(jax.random.PRNGKey(seed))


def cached_logits(model, params, batch):
    """Teacher-forced logits recomputed with prefill (BOS + 2 codes) and then one cached step per position."""
    text, image = batch["text_tokens"], batch["image_tokens"]
    inputs = model.decoder_inputs(image)
    prefill = jax.jit(lambda p, t, i: model.prefill(p, t, i))
    step = jax.jit(lambda p, tok, idx, c: model.decode_step(p, tok, idx, c))
    first, cache = prefill(params, text, inputs[:, :3])
    out = [None, None, first]  # prefill returns only the last position's logits
    for t in range(3, model.image_length):
        logits, cache = step(params, inputs[:, t:t + 1], t, cache)
        out.append(logits[:, 0])
    return jnp.stack(out[2:], axis=1)  # positions 2 .. image_length - 1


VARIANTS = {
    # every dalle-mini switch appears in at least one variant
    "normformer_default": {},
    "swinv2_swinpos_cosine_unscanned": {"ln_positions": "swinv2", "use_swin_position_embeddings": True,
                                        "use_cosine_attention": True, "decoder_layers": 7, "scan_layers": False},
    "swinv2_scanned": {"ln_positions": "swinv2", "decoder_layers": 7},
    "cogview_rmsnorm_headscale_mlp_smelu_bias_extra": {
        "ln_positions": "cogview", "ln_type": "rmsnorm", "use_head_scale": True, "use_glu": False,
        "activation_function": "smelu", "use_bias": True, "image_extra_tokens": 3, "scale_embedding": True,
        "force_ln_scale": True},
    "subln_init_sinkhorn": {"ln_positions": "subln", "use_subln_init": True, "sinkhorn_iters": 3},
    "deepnet_scaling_unscanned": {"ln_positions": "deepnet", "use_deepnet_scaling": True, "scan_layers": False},
    "preln_no_final_ln": {"ln_positions": "preln", "use_final_ln_encoder": False, "use_final_ln_decoder": False},
    "postln": {"ln_positions": "postln"},
}
SLOW_VARIANTS = {"preln_no_final_ln", "postln", "swinv2_swinpos_cosine_unscanned"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_VARIANTS else n
                                  for n in sorted(VARIANTS)])
def test_switch_variants_cached_decoding_equals_full_forward(name):
    cfg = presets.micro()
    cfg.update(VARIANTS[name])
    model = model_lib.build_model(cfg)
    params = random_params(model)
    batch = batch_for(model.config)
    full = jax.jit(model.logits)(params, batch)
    assert full.shape == (2, model.image_length, model.image_vocab_size)
    assert np.isfinite(np.asarray(full)).all()
    np.testing.assert_allclose(cached_logits(model, params, batch), full[:, 2:], atol=2e-4, rtol=2e-4)


def test_switches_change_the_params():
    names = {}
    for name in ("normformer_default", "cogview_rmsnorm_headscale_mlp_smelu_bias_extra", "subln_init_sinkhorn",
                 "swinv2_swinpos_cosine_unscanned", "deepnet_scaling_unscanned"):
        cfg = presets.micro()
        cfg.update(VARIANTS[name])
        names[name] = set(sharding.to_mapping(jax.eval_shape(model_lib.build_model(cfg).init,
                                                             jax.random.PRNGKey(0))))
    default = names["normformer_default"]
    assert "dalle_bart/decoder/layers/layer/ffn/wi_1/kernel" in default  # GLU
    assert "dalle_bart/decoder/layers/layer/self_attn_pre_norm/bias" in default
    assert "dalle_bart/decoder/layers/layer/self_attn_pre_norm/scale" not in default  # NormFormer: bias only
    cog = names["cogview_rmsnorm_headscale_mlp_smelu_bias_extra"]
    assert "dalle_bart/decoder/layers/layer/self_attn/head_scale" in cog
    assert "dalle_bart/decoder/layers/layer/ffn/post_norm/scale" in cog
    assert "dalle_bart/decoder/layers/layer/self_attn/q_proj/bias" in cog
    assert not any(n.endswith("wi_1/kernel") for n in cog)
    sub = names["subln_init_sinkhorn"]
    assert "dalle_bart/decoder/layers/layer/self_attn/mid_norm/scale" in sub
    assert "dalle_bart/decoder/layers/layer/cross_attn/mid_norm/scale" not in sub
    # dalle-mini's decoder layers have no pre-attention norm with sub-LN, its encoder layers do
    assert "dalle_bart/decoder/layers/layer/self_attn_pre_norm/bias" not in sub
    assert "dalle_bart/encoder/layers/layer/self_attn_pre_norm/bias" in sub
    swin = names["swinv2_swinpos_cosine_unscanned"]  # unscanned names: layers/layer_<i>/layer/...
    assert "dalle_bart/decoder/layers/layer_6/layer/cross_attn/rel_bias" in swin
    assert "dalle_bart/decoder/layers/layer_5/layer/output_norm/scale" in swin
    deep = names["deepnet_scaling_unscanned"]
    assert "dalle_bart/decoder/layers/layer_1/layer/cross_attn_residual_norm/scale" in deep
    assert not any("final_ln" in n for n in deep)


def test_causal_masking_future_tokens_never_change_earlier_logits():
    model = model_lib.build_model(presets.micro())
    params = random_params(model)
    batch = batch_for(model.config)
    logits = jax.jit(model.logits)
    base = logits(params, batch)
    j = 6  # change code j: it is the decoder input at position j + 1
    changed = dict(batch, image_tokens=batch["image_tokens"].at[:, j].set((batch["image_tokens"][:, j] + 1) % 40))
    other = logits(params, changed)
    np.testing.assert_array_equal(np.asarray(other[:, : j + 1]), np.asarray(base[:, : j + 1]))
    assert not np.allclose(other[:, j + 1], base[:, j + 1])


def test_text_padding_is_masked_and_blank_caption_is_finite():
    model = model_lib.build_model(presets.micro())
    params = random_params(model)
    batch = batch_for(model.config, pad_from=5)
    logits = jax.jit(model.logits)
    base = logits(params, batch)
    # A longer caption changes the output (the encoder is used) ...
    longer = dict(batch, text_tokens=batch["text_tokens"].at[:, 5].set(7))
    assert not np.allclose(logits(params, longer), base, atol=1e-5)
    # ... and the all-padding caption (the unconditional prompt) is finite.
    blank = dict(batch, text_tokens=jnp.zeros_like(batch["text_tokens"]))
    assert np.isfinite(np.asarray(logits(params, blank))).all()


def test_loss_metrics_bf16_and_training_dropout():
    cfg = presets.micro()
    cfg.dropout = 0.1
    model = model_lib.build_model(cfg)
    params = init(model)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    batch = batch_for(model.config)
    loss, metrics = jax.jit(lambda p, b: model.loss(p, b, None, is_training=False))(params, batch)
    assert set(metrics) >= {"loss", "accuracy"}
    np.testing.assert_allclose(loss, np.log(40), rtol=0.05)  # near-uniform at init over the 40 codes
    # bf16 compute (fp32 params) with dropout on, driven by the rng
    train = jax.jit(lambda p, b, r: model.loss(p, b, r, is_training=True, compute_dtype="bfloat16")[0])
    l1, l2 = train(params, batch, jax.random.PRNGKey(1)), train(params, batch, jax.random.PRNGKey(2))
    assert l1 != l2 and abs(l1 - loss) < 0.2


@pytest.mark.slow
def test_sgd_reduces_loss_with_remat():
    cfg = presets.micro()
    cfg.remat = True
    model = model_lib.build_model(cfg)
    batch = batch_for(model.config)

    def sgd(p):
        def step(p, _):
            loss, g = jax.value_and_grad(lambda q: model.loss(q, batch, None, is_training=True)[0])(p)
            return jax.tree_util.tree_map(lambda w, d: w - 0.5 * d, p, g), loss
        return jax.lax.scan(step, p, None, length=6)

    _, losses = jax.jit(sgd)(init(model))
    assert losses[-1] < losses[0] - 0.1  # gradients flow through every part


def test_sharded_forward_equals_single_device():
    assert jax.device_count() == 8, "conftest provides 8 fake CPU devices"
    model = model_lib.build_model(presets.micro())
    params = random_params(model)
    batch = batch_for(model.config, batch=4)
    
    ref = jax.jit(model.logits)(params, batch)
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    shardings = sharding.param_shardings(params, model.partition_rules, sharding.DEFAULT_LOGICAL_RULES, mesh)
    specs = {k: v.spec for k, v in sharding.to_mapping(shardings).items()}
    assert specs["dalle_bart/decoder/layers/layer/self_attn/q_proj/kernel"] == jax.sharding.PartitionSpec(
        None, "fsdp", "model")
    assert specs["dalle_bart/decoder/layers/layer/ffn/wo/kernel"] == jax.sharding.PartitionSpec(None, "model", "fsdp")
    with sharding.use_mesh(mesh):
        sp = sharding.shard_put(params, shardings)
        sb = sharding.host_to_global(jax.device_get(batch), mesh)
        out = jax.jit(model.logits)(sp, sb)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


def test_every_param_has_a_partition_rule_for_all_presets():
    for cfg in (presets.mini(), presets.mega(), presets.micro()):
        for extra in ({}, {"use_bias": True, "use_head_scale": True, "use_swin_position_embeddings": True,
                           "ln_positions": "subln"}):
            cfg.update(extra)
            model = model_lib.build_model(cfg)
            abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0))
            axes = sharding.param_logical_axes(abstract, model.partition_rules)
            assert all(a is not None for a in jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, tuple)))


def test_preset_param_counts_match_dalle_mini():
    counts = {}
    for name in ("tiny", "mini", "mini_glu"):
        model = model_lib.build_model(getattr(presets, name)())
        counts[name] = model.param_count(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    assert counts == {"tiny": 5_592_576, "mini": 538_593_280, "mini_glu": 437_903_344}  # dalle-mini's own counts


def test_filters_and_flops():
    model = model_lib.build_model(presets.micro())
    names = list(sharding.to_mapping(jax.eval_shape(model.init, jax.random.PRNGKey(0))))
    enc = [n for n in names if model.encoder_param_filter(n)]
    assert "dalle_bart/encoder/embed_tokens/embedding" in enc
    assert all(n.startswith("dalle_bart/encoder/") for n in enc) and len(enc) < len(names)
    emb = {n for n in names if model.embedding_param_filter(n)}
    assert emb == {"dalle_bart/decoder/embed_tokens/embedding", "dalle_bart/decoder/embed_positions/embedding",
                   "dalle_bart/decoder/layernorm_embedding/scale", "dalle_bart/decoder/layernorm_embedding/bias",
                   "dalle_bart/decoder/final_ln/bias", "dalle_bart/lm_head/kernel"}
    mini = model_lib.build_model(presets.mini())
    n_params = 538_593_280
    # 6 * N * tokens is the dominant term (embeddings excluded, attention added): same order of magnitude.
    approx = 6 * n_params * 256
    assert 0.5 * approx < mini.flops_per_example() < 2 * approx
    # An encoder without GLU (model.encoder_use_glu=False under a GLU decoder) has one FFN matrix fewer per layer.
    glu = presets.micro()
    glu.use_glu = True
    plain_enc = presets.micro()
    plain_enc.use_glu, plain_enc.encoder_use_glu = True, False
    c = glu
    fewer = 3 * c.encoder_layers * 2 * c.max_text_length * c.d_model * c.encoder_ffn_dim
    assert model_lib.build_model(glu).flops_per_example() - model_lib.build_model(plain_enc).flops_per_example() \
        == fewer


def test_schema_errors_name_the_key():
    def errors_for(**kw):
        cfg = ConfigDict({"model": dict(presets.micro().to_dict(), **kw)})
        with pytest.raises(config_lib.ConfigError) as e:
            config_lib.validate(cfg)
        return str(e.value)

    assert "model.d_model = 30 is not divisible by model.encoder_attention_heads = 4" in errors_for(
        d_model=30, encoder_attention_heads=4)
    assert "model.ln_positions = 'sandwhich'" in errors_for(ln_positions="sandwhich")
    assert "model.use_deepnet_scaling and model.use_subln_init" in errors_for(use_deepnet_scaling=True,
                                                                              use_subln_init=True)
    assert "unknown key 'model.use_alibi'" in errors_for(use_alibi=True)
    with pytest.raises(config_lib.ConfigError, match="d_model"):
        model_lib.build_model(ConfigDict(dict(presets.micro().to_dict(), d_model=33)))
    ok = config_lib.validate(ConfigDict({"model": presets.micro()}))
    assert ok.model.kind == "dalle_bart"
