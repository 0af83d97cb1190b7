"""One-query attention kernels over a heads-major KV cache (dalle/kernels/cache_attention) against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle.kernels import cache_attention

pytestmark = pytest.mark.skipif(not cache_attention.available(), reason="needs XLA:CPU and a C++ compiler")


@pytest.mark.parametrize("b,h,t,d,length", [(2, 3, 10, 8, 4), (1, 2, 7, 64, 7), (3, 1, 5, 20, 0), (2, 2, 6, 16, 9)])
def test_scores_and_mix_read_only_the_filled_positions(b, h, t, d, length):
    rs = np.random.RandomState(b * 100 + t)
    q = rs.randn(b, h, d).astype(np.float32)
    k = rs.randn(b, h, t, d).astype(np.float32)
    v = rs.randn(b, h, t, d).astype(np.float32)
    w = rs.rand(b, h, t).astype(np.float32)
    n = min(length, t)
    f = jax.jit(lambda q, k, v, w, n: (cache_attention.scores(q, k, n), cache_attention.mix(w, v, n)))
    s, o = f(q, k, v, w, jnp.int32(length))
    ref_s = np.einsum("bhd,bhtd->bht", q, k)
    ref_s[:, :, n:] = 0.0  # beyond the filled part: 0, never read
    np.testing.assert_allclose(s, ref_s, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(o, np.einsum("bht,bhtd->bhd", w[:, :, :n], v[:, :, :n]), rtol=1e-5, atol=1e-4)
    # garbage in the unfilled positions changes nothing
    k2, v2 = k.copy(), v.copy()
    k2[:, :, n:] = np.nan
    v2[:, :, n:] = np.nan
    s2, o2 = f(q, k2, v2, w, jnp.int32(length))
    np.testing.assert_array_equal(s2, s)
    np.testing.assert_array_equal(o2, o)


def test_shape_errors_name_the_operands():
    with pytest.raises(ValueError, match="does not match"):
        cache_attention.scores(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 5, 8)), 1)
    with pytest.raises(ValueError, match="does not match"):
        cache_attention.mix(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 5, 8)), 1)
