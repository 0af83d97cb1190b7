"""Shared transformer pieces: norms, activations, attention with a KV cache, layer stacks, mixed precision."""

import dataclasses

import haiku as hk
import jax
import jax.numpy as jnp
import jmp
import numpy as np
import pytest

from dalle.kernels import cache_attention, panel_gemm
from dalle.modeling import layers

F32 = jmp.Policy(jnp.float32, jnp.float32, jnp.float32)


def _spec(**kw):
    base = dict(d_model=16, num_heads=2, ffn_dim=24, self_length=6, cross_length=5)
    base.update(kw)
    return layers.TransformerSpec(**base)


def test_layernorm_and_rmsnorm_match_formulas():
    x = np.random.RandomState(0).randn(3, 8).astype(np.float32) * 3 + 1

    def ln(x):
        return layers.Norm("layernorm", name="ln")(x), layers.Norm("rmsnorm", name="rms")(x)

    f = hk.transform(ln)
    params = f.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.5, params)  # non-trivial scale and bias
    y_ln, y_rms = f.apply(params, None, x)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y_ln, (x - mu) / np.sqrt(var + 1e-5) * 1.5 + 0.5, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_rms, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * 1.5, rtol=1e-5, atol=1e-5)
    assert set(params["rms"]) == {"scale"}  # RMSNorm has no bias


def test_norm_without_scale_has_only_bias():
    f = hk.transform(lambda x: layers.Norm("layernorm", use_scale=False, name="n")(x))
    params = f.init(jax.random.PRNGKey(0), jnp.ones((2, 4)))
    assert set(params["n"]) == {"bias"}


def test_activations():
    x = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(layers.smelu(x), [0, 0, 0.0625, 0.25, 0.5625, 1.0, 2.0], atol=1e-6)
    grad = jax.vmap(jax.grad(layers.smelu))(x)
    np.testing.assert_allclose(grad, [0, 0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
    # dalle-mini's published smelu returns 0.25 below -1 (kept for converted checkpoints only)
    np.testing.assert_allclose(layers.activation("smelu_dallemini")(x), [0.25, 0.25, 0.0625, 0.25, 0.5625, 1, 2])
    np.testing.assert_allclose(layers.activation("gelu")(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
    np.testing.assert_allclose(layers.activation("swish")(x), x * jax.nn.sigmoid(x), atol=1e-6)
    with pytest.raises(ValueError, match="unknown activation_function 'tanhh'"):
        layers.activation("tanhh")


ATTN_VARIANTS = {
    "plain": {},
    "headscale_cosine_swin_subln": {"use_head_scale": True, "use_cosine_attention": True, "tau_init": 0.1,
                                    "use_swin_position_embeddings": True, "ln_positions": "subln"},
}


@pytest.mark.parametrize("native", [False, True], ids=["xla", "native"])
@pytest.mark.parametrize("variant", sorted(ATTN_VARIANTS))
def test_cached_attention_equals_full_and_is_causal(variant, native):
    if native and not cache_attention.available():
        pytest.skip("native cache attention needs XLA:CPU and a C++ compiler")
    spec = _spec(**ATTN_VARIANTS[variant])
    seq = 6

    def full(x):
        return layers.Attention(spec, F32, is_cross=False, causal=True, name="a")(x, q_positions=jnp.arange(seq))[0]

    # native: one-token steps read the cache with dalle.kernels.cache_attention (only its filled part)
    step_spec = dataclasses.replace(spec, decode_kernels="native" if native else "xla")

    def step(x, t, cache):
        out, kv = layers.Attention(step_spec, F32, is_cross=False, causal=True, name="a")(
            x, q_positions=t + jnp.arange(x.shape[1]), cache=cache, cache_index=t)
        return out, kv

    x = jax.random.normal(jax.random.PRNGKey(1), (2, seq, 16))
    f, g = hk.transform(full), hk.transform(step)
    f = hk.Transformed(f.init, jax.jit(f.apply))
    g = hk.Transformed(g.init, jax.jit(g.apply))
    params = f.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(3), p.shape), params)
    ref = f.apply(params, None, x)

    cache = layers.KV(jnp.zeros((2, 2, seq, 8)), jnp.zeros((2, 2, seq, 8)))  # heads-major [B, H, T, D]
    # a 2-token prefill then one token at a time; the layer writes its new keys into the cache it returns
    step_params = layers.with_panel_kernels(params) if native else params  # native Dense reads packed weights
    out0, cache = g.apply(step_params, None, x[:, :2], 0, cache)
    assert cache.k.shape == (2, 2, seq, 8)
    assert not np.any(np.asarray(cache.k[:, :, 2:])), "positions not yet decoded stay untouched"
    outs = [out0]
    for t in range(2, seq):
        out, cache = g.apply(step_params, None, x[:, t:t + 1], t, cache)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), ref, atol=1e-5)

    # causality: changing the last token changes only the last output
    x2 = x.at[:, -1].set(7.0)
    ref2 = f.apply(params, None, x2)
    np.testing.assert_allclose(ref2[:, :-1], ref[:, :-1], atol=1e-6)
    assert not np.allclose(ref2[:, -1], ref[:, -1])


def test_key_mask_and_all_masked_rows_are_finite():
    spec = _spec()

    def f(x, mask):
        return layers.Attention(spec, F32, is_cross=False, causal=False, name="a")(
            x, q_positions=jnp.arange(x.shape[1]), key_mask=mask)[0]

    t = hk.transform(f)
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 16))
    mask = jnp.array([[True, True, True, False, False]])
    params = t.init(jax.random.PRNGKey(0), x, mask)
    y = t.apply(params, None, x, mask)
    y_changed = t.apply(params, None, x.at[:, 3:].set(5.0), mask)
    # Masked keys do not influence valid... any query (rows 0-2 only see keys 0-2).
    np.testing.assert_allclose(y[:, :3], y_changed[:, :3], atol=1e-6)
    y_none = t.apply(params, None, x, jnp.zeros_like(mask))
    assert np.isfinite(np.asarray(y_none)).all()  # the all-padding (unconditional) caption stays finite


def test_sinkhorn_changes_encoder_attention_only():
    spec1 = _spec(is_encoder=True)
    spec3 = _spec(is_encoder=True, sinkhorn_iters=3)
    spec3_dec = _spec(is_encoder=False, sinkhorn_iters=3)

    def f(x, spec):
        return layers.Attention(spec, F32, is_cross=False, causal=False, name="a")(x, q_positions=jnp.arange(5))[0]

    x = 30 * jax.random.normal(jax.random.PRNGKey(1), (1, 5, 16))
    t1 = hk.transform(lambda x: f(x, spec1))
    t3 = hk.transform(lambda x: f(x, spec3))
    t3d = hk.transform(lambda x: f(x, spec3_dec))
    params = t1.init(jax.random.PRNGKey(0), x)
    y1, y3 = t1.apply(params, None, x), t3.apply(params, None, x)
    assert np.abs(np.asarray(y1 - y3)).max() > 1e-3
    np.testing.assert_allclose(t3d.apply(params, None, x), y1, atol=1e-6)  # causal/decoder: plain softmax


@pytest.mark.parametrize("check_remat", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_layer_stack_scanned_equals_unrolled_and_remat_gradients_match(check_remat):
    spec = _spec()

    def run(x, scan, remat):
        def layer(h, flag):
            out = layers.Block(spec, F32, name="layer")(h, q_positions=jnp.arange(x.shape[1]), output_norm=flag)
            return out.x, None
        return layers.stack_layers(layer, 3, x, [jnp.zeros((3,), bool)], scan=scan, remat=remat)[0]

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16))
    ts = hk.transform(lambda x: run(x, True, False))
    tu = hk.transform(lambda x: run(x, False, False))
    tr = hk.transform(lambda x: run(x, True, True))
    rs = np.random.RandomState(0)
    ps = jax.tree_util.tree_map(lambda a: jnp.asarray(0.3 * rs.standard_normal(a.shape), jnp.float32),
                                jax.eval_shape(ts.init, jax.random.PRNGKey(0), x))
    pu = jax.eval_shape(tu.init, jax.random.PRNGKey(0), x)
    # unrolled params are named layers/layer_i/layer/...; build them from the stacked ones
    unstacked = {}
    for name, leaves in ps.items():
        for i in range(3):
            unstacked[name.replace("layers/layer", f"layers/layer_{i}/layer")] = {k: v[i] for k, v in leaves.items()}
    assert set(unstacked) == set(pu)
    np.testing.assert_allclose(jax.jit(ts.apply)(ps, None, x), jax.jit(tu.apply)(unstacked, None, x), atol=1e-5)
    if not check_remat:
        return
    g1 = jax.jit(jax.grad(lambda p: jnp.sum(ts.apply(p, None, x) ** 2)))(ps)
    g2 = jax.jit(jax.grad(lambda p: jnp.sum(tr.apply(p, None, x) ** 2)))(ps)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g1, g2)


def test_bf16_policy_keeps_fp32_params():
    spec = _spec()
    bf16 = jmp.Policy(jnp.float32, jnp.bfloat16, jnp.bfloat16)

    def f(x, policy):
        return layers.Block(spec, policy, name="b")(x.astype(policy.compute_dtype), q_positions=jnp.arange(4)).x

    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 16))
    t32, t16 = hk.transform(lambda x: f(x, F32)), hk.transform(lambda x: f(x, bf16))
    p = t32.init(jax.random.PRNGKey(0), x)
    p16 = t16.init(jax.random.PRNGKey(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(p16))
    y16 = t16.apply(p, None, x)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), t32.apply(p, None, x), atol=0.1)


def test_dense_decode_kernels_are_an_explicit_choice():
    """Only a Dense built with decode_kernels="native" reads the packed `kernel_panels` (no ambient switch: a
    server tracing decode steps in several threads cannot change another trace's kernels)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8))
    xla = hk.transform(lambda x: layers.Dense(20, F32, name="d")(x))
    params = xla.init(jax.random.PRNGKey(0), x)
    assert set(params["d"]) == {"kernel"}
    ref = x @ params["d"]["kernel"]
    packed = layers.with_panel_kernels(params)
    assert set(packed["d"]) == {"kernel", "kernel_panels"}
    np.testing.assert_allclose(xla.apply(packed, None, x), ref, rtol=1e-5, atol=1e-5)
    if panel_gemm.available():
        native = hk.transform(lambda x: layers.Dense(20, F32, name="d", decode_kernels="native")(x))
        only_panels = {"d": {"kernel_panels": packed["d"]["kernel_panels"]}}
        np.testing.assert_allclose(native.apply(only_panels, None, x), ref, rtol=1e-5, atol=1e-5)
    bad = hk.transform(lambda x: layers.Dense(20, F32, decode_kernels="fast")(x))
    with pytest.raises(ValueError, match="unknown decode_kernels 'fast'"):
        bad.init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="unknown decode_kernels 'fast'"):
        _spec(decode_kernels="fast")
