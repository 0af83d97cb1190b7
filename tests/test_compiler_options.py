"""Per-jit XLA options: they reach the compiler (no YNNPACK fusion left on CPU) and change no result."""

import jax
import jax.numpy as jnp
import numpy as np

from dalle import compiler_options


def test_eigen_kernels_option_reaches_the_compiler_and_keeps_results():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 16, 16, 32)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 32, 32)), jnp.float32)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    options = compiler_options.eigen_kernels_on_cpu()
    plain, tuned = jax.jit(conv), jax.jit(conv, compiler_options=options)
    np.testing.assert_allclose(tuned(x, w), plain(x, w), rtol=1e-5, atol=1e-4)
    if jax.default_backend() == "cpu":
        assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}
        assert "ynn" not in tuned.lower(x, w).compile().as_text()
    else:
        assert options == {}


def test_decode_loop_options_keep_long_reductions_whole():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 4096)), jnp.float32)

    def norm(x):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        return (x - mean) / jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True) + 1e-5)

    options = compiler_options.decode_loop_on_cpu()
    plain = jax.jit(norm, compiler_options=compiler_options.eigen_kernels_on_cpu())
    tuned = jax.jit(norm, compiler_options=options)
    np.testing.assert_allclose(tuned(x), plain(x), rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":
        assert "reduce-window" in plain.lower(x).compile().as_text()  # what the option removes
        assert "reduce-window" not in tuned.lower(x).compile().as_text()
        assert options["xla_cpu_experimental_ynn_fusion_type"] == ""
    else:
        assert options == {}
