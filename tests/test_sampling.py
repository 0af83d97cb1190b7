"""The jitted decode loop: greedy/top-k/top-p/temperature, super-conditioning, seeds, image prompts, meshes."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle import compiler_options, sharding
from dalle.modeling import model as model_lib
from dalle.modeling import presets, sampling
from tests.test_dalle_bart import batch_for, random_params


@pytest.fixture(scope="module")
def bart():
    model = model_lib.build_model(presets.micro())
    return model, random_params(model)


@pytest.fixture(scope="module")
def decoder_only():
    model = model_lib.build_model(presets.tiny_decoder_only(text_vocab_size=50, image_vocab_size=40,
                                                            max_text_length=8, image_length=12))
    return model, random_params(model)


def greedy_reference(model, params, text, prompt=None):
    """Greedy decoding the slow way: a full teacher-forced forward pass per position."""
    logits_fn = jax.jit(model.logits)
    codes = np.zeros((text.shape[0], model.image_length), np.int32)
    start = 0
    if prompt is not None:
        codes[:, : prompt.shape[1]] = prompt
        start = prompt.shape[1]
    for t in range(start, model.image_length):
        logits = logits_fn(params, {"text_tokens": text, "image_tokens": jnp.asarray(codes)})
        codes[:, t] = np.argmax(np.asarray(logits[:, t]), -1)
    return codes


@pytest.mark.parametrize("kind", ["bart", "decoder_only"])
def test_greedy_and_top_k_1_equal_full_forward_argmax(kind, request):
    model, params = request.getfixturevalue(kind)
    text = batch_for(model.config, batch=2)["text_tokens"]
    ref = greedy_reference(model, params, text)
    greedy = sampling.generate(model, params, text, jax.random.PRNGKey(0), temperature=0.0)
    assert greedy.dtype == jnp.int32 and greedy.shape == (2, model.image_length)
    np.testing.assert_array_equal(np.asarray(greedy), ref)
    if kind == "bart":  # the sampler with top_k=1 (any seed, temperature) is greedy
        top1 = sampling.generate(model, params, text, jax.random.PRNGKey(5), top_k=1, temperature=1.7)
        np.testing.assert_array_equal(np.asarray(top1), ref)


def test_image_prompt_keeps_the_prefix_and_completes_the_rest(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    prompt = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]], np.int32)
    ref = greedy_reference(model, params, text, prompt)
    out = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(0), temperature=0.0,
                                       image_prompt=prompt, num_images=2))
    assert out.shape == (4, model.image_length)
    np.testing.assert_array_equal(out[:, :5], np.repeat(prompt, 2, axis=0))
    np.testing.assert_array_equal(out, np.repeat(ref, 2, axis=0))


def test_guidance_scale_1_equals_conditional_and_formula(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    rng = jax.random.PRNGKey(7)
    cond, cond_logits = sampling.generate(model, params, text, rng, top_k=10, return_logits=True)
    both, both_logits = sampling.generate(model, params, text, rng, top_k=10, condition_scale=1.0, guidance=True,
                                          return_logits=True)
    np.testing.assert_allclose(both_logits, cond_logits, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(both), np.asarray(cond))
    # s = 3: the logits each code was drawn from are uncond + 3 * (cond - uncond), checked by full forwards
    codes, logits = sampling.generate(model, params, text, rng, top_k=10, condition_scale=3.0, return_logits=True)
    full = jax.jit(model.logits)
    lc = full(params, {"text_tokens": text, "image_tokens": codes})
    lu = full(params, {"text_tokens": jnp.zeros_like(text), "image_tokens": codes})
    np.testing.assert_allclose(logits, lu + 3.0 * (lc - lu), atol=2e-4)


def test_one_unconditional_prompt_is_encoded_once_for_all_rows(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    rng = jax.random.PRNGKey(3)
    kw = dict(top_k=10, condition_scale=3.0, num_images=2, return_logits=True)
    for uncond in (jnp.zeros_like(text[0]), text[1]):  # the default (padding) prompt, and a real one
        once, once_logits = sampling.generate(model, params, text, rng, uncond_tokens=uncond, **kw)
        rows, rows_logits = sampling.generate(model, params, text, rng, uncond_tokens=jnp.stack([uncond, uncond]),
                                              **kw)  # given per row: every row is encoded
        np.testing.assert_allclose(once_logits, rows_logits, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(once), np.asarray(rows))


def test_seeds_reproducible_and_distinct_rows(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    kw = dict(num_images=3, top_k=20, top_p=0.95, temperature=1.2, condition_scale=2.0)
    a = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(1), **kw))
    n_compiled = len(model._generate_cache)
    b = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(1), **kw))
    c = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(2), **dict(kw, condition_scale=4.0,
                                                                                         temperature=0.9)))
    assert len(model._generate_cache) == n_compiled  # float knobs are traced: no new compilation
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, model.image_length)
    assert (a != c).any()
    assert len({tuple(r) for r in a}) == 6  # every image of every prompt differs
    assert a.min() >= 0 and a.max() < model.image_vocab_size


def test_filter_logits_top_k_top_p_temperature():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    inf = -np.inf
    np.testing.assert_array_equal(np.isfinite(sampling.filter_logits(logits, top_k=2)), [[1, 1, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(sampling.filter_logits(logits, top_p=0.7)), [[1, 1, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(sampling.filter_logits(logits, top_p=0.8)), [[1, 1, 0, 0]])
    np.testing.assert_array_equal(np.isfinite(sampling.filter_logits(logits, top_p=0.81)), [[1, 1, 1, 0]])
    np.testing.assert_array_equal(np.isfinite(sampling.filter_logits(logits, top_p=0.1)), [[1, 0, 0, 0]])
    np.testing.assert_allclose(sampling.filter_logits(logits, temperature=2.0), logits / 2)
    assert inf not in np.asarray(sampling.filter_logits(logits))
    # sampling frequencies follow the filtered, renormalised distribution
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = jax.vmap(lambda k: sampling.sample_tokens(logits, k, 0, greedy=False, top_k=2, top_p=None,
                                                      temperature=jnp.float32(1.0)))(keys)[:, 0]
    freq = np.bincount(np.asarray(draws), minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.03)


@pytest.mark.parametrize("k", [1, 2, 5, 50, 64])
def test_kth_largest_equals_top_k(k):
    rng = np.random.RandomState(k)
    x = rng.randn(4, 64).astype(np.float32) * 30
    x[0, :10] = 7.0  # ties
    x[1, ::3] = -np.inf  # filtered entries
    x[2, :4] = [0.0, -0.0, 1e-30, -1e-30]  # signed zeros and tiny values next to each other
    x[3] = np.round(x[3])  # many ties
    got = np.asarray(jax.jit(sampling.kth_largest, static_argnums=1)(x, k))
    np.testing.assert_array_equal(got, np.asarray(jax.lax.top_k(jnp.asarray(x), k)[0][:, -1:]))


def test_generate_inside_a_callers_jit_equals_generate(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    kw = dict(top_k=5, condition_scale=3.0)
    direct = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(2), **kw))
    wrapped = jax.jit(lambda p, t: sampling.generate(model, p, t, jax.random.PRNGKey(2), **kw),
                      compiler_options=sampling.decode_compiler_options())
    np.testing.assert_array_equal(np.asarray(wrapped(params, text)), direct)
    params_only = jax.jit(lambda p: sampling.generate(model, p, text, jax.random.PRNGKey(2), **kw))  # text concrete
    np.testing.assert_array_equal(np.asarray(params_only(params)), direct)
    if jax.default_backend() == "cpu":
        assert sampling.decode_compiler_options() == compiler_options.decode_loop_on_cpu()
        assert sampling.decode_compiler_options()["xla_cpu_experimental_ynn_fusion_type"] == ""


def test_argument_errors(bart):
    model, params = bart
    text = batch_for(model.config, batch=1)["text_tokens"]
    with pytest.raises(ValueError, match="top_p"):
        sampling.generate(model, params, text, jax.random.PRNGKey(0), top_p=0.0)
    with pytest.raises(ValueError, match="image_prompt"):
        sampling.generate(model, params, text, jax.random.PRNGKey(0), image_prompt=np.zeros((1, 12), np.int32))
    with pytest.raises(ValueError, match="length"):
        sampling.generate(model, params, text[:, :4], jax.random.PRNGKey(0))


@pytest.mark.slow
def test_generate_on_a_mesh_equals_single_device(bart):
    model, params = bart
    text = batch_for(model.config, batch=2)["text_tokens"]
    kw = dict(num_images=2, top_k=8, condition_scale=2.0)
    ref = np.asarray(sampling.generate(model, params, text, jax.random.PRNGKey(3), **kw))
    mesh = sharding.make_mesh(("data", "fsdp", "model"), (2, 2, 2))
    shardings = sharding.param_shardings(params, model.partition_rules, sharding.DEFAULT_LOGICAL_RULES, mesh)
    with sharding.use_mesh(mesh):
        sp = sharding.shard_put(params, shardings)
        out = np.asarray(sampling.generate(model, sp, text, jax.random.PRNGKey(3), **kw))
    np.testing.assert_array_equal(out, ref)
