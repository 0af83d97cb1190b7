"""The panel-packed few-row matmul kernel (dalle/kernels/panel_gemm) against jnp.dot, and decoding with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle.kernels import cache_attention, native, panel_gemm
from dalle.modeling import model as model_lib
from dalle.modeling import presets, sampling

pytestmark = pytest.mark.skipif(not panel_gemm.available(), reason="panel kernel needs XLA:CPU and a C++ compiler")


def test_pack_layout():
    w = jnp.arange(3 * 20, dtype=jnp.float32).reshape(3, 20)
    p = panel_gemm.pack(w)
    assert p.shape == (2, 3, 16) == panel_gemm.packed_shape(3, 20)
    np.testing.assert_array_equal(p[1, 2, :4], w[2, 16:20])
    np.testing.assert_array_equal(p[1, :, 4:], 0.0)  # padding columns
    np.testing.assert_array_equal(p[0, 1], w[1, :16])


@pytest.mark.parametrize("rows,k,n", [(1, 64, 16), (2, 37, 50), (5, 128, 33), (16, 96, 100), (17, 64, 48),
                                      (40, 16, 7)])
def test_matmul_equals_dot(rows, k, n):
    rs = np.random.RandomState(rows * 1000 + n)
    x = jnp.asarray(rs.randn(rows, k).astype(np.float32))
    w = jnp.asarray(rs.randn(k, n).astype(np.float32))
    got = jax.jit(lambda x, p: panel_gemm.matmul(x, p, n))(x, panel_gemm.pack(w))
    np.testing.assert_allclose(got, np.asarray(x) @ np.asarray(w), rtol=1e-5, atol=1e-4)


def test_matmul_keeps_leading_axes_and_checks_shapes():
    x = jnp.ones((2, 3, 8))
    w = jnp.full((8, 20), 0.5)
    out = panel_gemm.matmul(x, panel_gemm.pack(w), 20)
    assert out.shape == (2, 3, 20)
    np.testing.assert_allclose(out, 4.0)
    with pytest.raises(ValueError, match="do not match"):
        panel_gemm.matmul(x, panel_gemm.pack(w), 40)


def test_build_reports_a_missing_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    with pytest.raises(native.KernelUnavailable, match="no-such-compiler-xyz"):
        native.build(native.os.path.join(native._HERE, "panel_gemm.cc"))


@pytest.mark.parametrize("kind", ["dalle_bart", "decoder_only"])
def test_generate_with_panel_kernels_matches_xla_dot(kind):
    cfg = presets.tiny() if kind == "dalle_bart" else presets.tiny_decoder_only()
    model = model_lib.build_model(cfg)
    params = model_lib.random_params(model, seed=0)
    text = jnp.asarray(np.random.RandomState(1).randint(1, 50, (2, model.max_text_length)), jnp.int32)
    kw = dict(condition_scale=3.0, temperature=0.0, return_logits=True)
    ref_codes, ref_logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="xla", **kw)
    codes, logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="native", **kw)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(logits, ref_logits, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="decode_kernels='native' needs float32 or bfloat16"):
        sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="native", compute_dtype="float16")


def test_generate_on_scanned_layers_with_panel_kernels():
    """`unroll_layers=False` decodes through the layer scan: the stacked weights are packed per layer."""
    model = model_lib.build_model(presets.tiny())
    assert model.config.scan_layers
    params = model_lib.random_params(model, seed=1)
    text = jnp.asarray(np.random.RandomState(2).randint(1, 50, (1, model.max_text_length)), jnp.int32)
    kw = dict(condition_scale=2.0, temperature=0.0, return_logits=True)
    ref_codes, ref_logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="xla", **kw)
    codes, logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="native",
                                      unroll_layers=False, **kw)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(logits, ref_logits, atol=2e-4, rtol=1e-4)


def test_decode_kernels_auto_picks_native_where_it_runs():
    # This module runs only where panel_gemm builds; "auto" also wants the cache-attention kernel.
    assert sampling.resolve_decode_kernels("auto") == ("native" if cache_attention.available() else "xla")
    native_or_xla = "native" if cache_attention.available() else "xla"
    assert sampling.resolve_decode_kernels("auto", compute_dtype="bfloat16") == native_or_xla
    assert sampling.resolve_decode_kernels("auto", compute_dtype="float16") == "xla"
    assert sampling.resolve_decode_kernels("xla") == "xla"
    with pytest.raises(ValueError, match="decode_kernels = 'fast' is not one of"):
        sampling.resolve_decode_kernels("fast")


def test_pack_keeps_bfloat16_weights_in_half_the_bytes():
    w = jnp.asarray(np.random.RandomState(3).randn(5, 20), jnp.bfloat16)
    p, p32 = panel_gemm.pack(w), panel_gemm.pack(w.astype(jnp.float32))
    assert p.dtype == jnp.bfloat16 and p32.dtype == jnp.float32 and p.shape == p32.shape == (2, 5, 16)
    assert p.nbytes * 2 == p32.nbytes
    np.testing.assert_array_equal(p.astype(jnp.float32), p32)  # the same layout, the same values
    assert panel_gemm.pack(w.astype(jnp.float16)).dtype == jnp.float32  # float16 is packed as float32


@pytest.mark.parametrize("rows,k,n", [(1, 64, 16), (2, 37, 50), (5, 128, 33), (8, 31, 17), (16, 96, 100),
                                      (17, 64, 48), (33, 45, 7), (40, 16, 130)])
def test_bfloat16_matmul_equals_float32_dot_of_the_widened_weights(rows, k, n):
    """bfloat16 panels: `x (float32) @ w.astype(float32)` up to float32 rounding (the kernel widens exactly)."""
    rs = np.random.RandomState(rows * 1000 + n + 7)
    x = jnp.asarray(rs.randn(rows, k).astype(np.float32))
    w = jnp.asarray(rs.randn(k, n), jnp.bfloat16)
    got = jax.jit(lambda x, p: panel_gemm.matmul(x, p, n))(x, panel_gemm.pack(w))
    assert got.dtype == jnp.float32 and got.shape == (rows, n)
    ref = np.asarray(x, np.float64) @ np.asarray(w.astype(jnp.float32), np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    # bfloat16 inputs are widened too (the result stays float32; callers cast it)
    got16 = panel_gemm.matmul(x.astype(jnp.bfloat16), panel_gemm.pack(w), n)
    ref16 = np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32), np.float64) @ np.asarray(w.astype(jnp.float32),
                                                                                               np.float64)
    np.testing.assert_allclose(got16, ref16, rtol=1e-5, atol=1e-4)


def test_matmul_refuses_float16_panels():
    with pytest.raises(ValueError, match="not float32 or bfloat16"):
        panel_gemm.matmul(jnp.ones((1, 8)), jnp.zeros((1, 8, 16), jnp.float16), 16)


@pytest.mark.parametrize("kind", ["dalle_bart", "decoder_only"])
@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled", "scanned"])
def test_bfloat16_generate_with_panel_kernels_matches_xla(unroll, kind):
    """bfloat16 decoding on bfloat16 weight panels agrees with XLA's bfloat16 ops up to bfloat16 rounding.

    Each matmul is the same correctly rounded product, but sums and roundings elsewhere in the step (bias adds,
    fusions) differ by an ulp now and then, and a greedy bf16 decode follows whichever code wins a near-tie, so
    the sequences may part: up to the first differing code the guided logits agree within a few bf16 ulps
    (about 0.06-0.125 at these magnitudes, x4 by guidance), and the first differing code is a near-tie in XLA's
    own logits."""
    from dalle import precision

    model = model_lib.build_model(presets.tiny() if kind == "dalle_bart" else presets.tiny_decoder_only())
    params = precision.cast(model_lib.random_params(model, seed=0), "bfloat16")
    text = jnp.asarray(np.random.RandomState(1).randint(1, 50, (2, model.max_text_length)), jnp.int32)
    kw = dict(condition_scale=3.0, temperature=0.0, return_logits=True, compute_dtype="bfloat16",
              unroll_layers=unroll)
    ref_codes, ref_logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="xla", **kw)
    codes, logits = sampling.generate(model, params, text, jax.random.PRNGKey(0), decode_kernels="native", **kw)
    ref_codes, ref_logits, codes, logits = map(np.asarray, (ref_codes, ref_logits, codes, logits))
    tol = 0.3
    for row in range(codes.shape[0]):
        same = codes[row] == ref_codes[row]
        first = int(np.argmin(same)) if not same.all() else len(same)
        assert first >= 16, f"row {row} parts from XLA's codes at step {first}"
        np.testing.assert_allclose(logits[row, :first], ref_logits[row, :first], atol=tol, rtol=0)
        if first < len(same):  # a near-tie: XLA's logit of the native pick is within bf16 noise of its best
            assert ref_logits[row, first].max() - ref_logits[row, first, codes[row, first]] <= tol


def test_with_panel_kernels_packs_bfloat16_for_bfloat16_compute():
    from dalle.modeling import layers

    params = {"m/dense": {"kernel": jnp.ones((8, 20), jnp.float32)}}
    assert layers.with_panel_kernels(params)["m/dense"]["kernel_panels"].dtype == jnp.float32
    assert layers.with_panel_kernels(params, "bfloat16")["m/dense"]["kernel_panels"].dtype == jnp.bfloat16
    bf16 = {"m/dense": {"kernel": jnp.ones((8, 20), jnp.bfloat16)}}
    assert layers.with_panel_kernels(bf16)["m/dense"]["kernel_panels"].dtype == jnp.bfloat16


_PORTABLE_CHECK = """
import json, numpy as np, jax, jax.numpy as jnp
from dalle.kernels import native, panel_gemm
assert panel_gemm.available()
errs = []
for rows, k, n in ((1, 64, 16), (5, 37, 50), (16, 96, 100)):
    rs = np.random.RandomState(rows + n)
    x, w = rs.randn(rows, k).astype(np.float32), rs.randn(k, n).astype(np.float32)
    got = panel_gemm.matmul(jnp.asarray(x), panel_gemm.pack(jnp.asarray(w)), n)
    errs.append(float(np.abs(np.asarray(got) - x @ w).max()))
    wb = jnp.asarray(w, jnp.bfloat16)
    got = panel_gemm.matmul(jnp.asarray(x), panel_gemm.pack(wb), n)
    errs.append(float(np.abs(np.asarray(got) - x @ np.asarray(wb, np.float32)).max()))
print(json.dumps({"errors": errs, "flags": native.compile_flags()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"), reason="-mno-avx512f is an x86 flag")
def test_portable_loops_without_avx512(tmp_path):
    """CPUs without AVX-512 take the kernel's plain C++ loops: built here with `-mno-avx512f` (in a fresh kernel
    cache, in a subprocess) they must give the same float32 and bfloat16 products, with no 512-bit registers."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    env = dict(os.environ, DALLE_KERNEL_CXXFLAGS="-mno-avx512f", DALLE_KERNEL_CACHE=str(tmp_path / "kernels"))
    out = subprocess.run([sys.executable, "-c", _PORTABLE_CHECK], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["flags"][-1] == "-mno-avx512f"
    assert max(result["errors"]) < 1e-3
    libs = list((tmp_path / "kernels").glob("panel_gemm-*.so"))
    assert len(libs) == 1
    if shutil.which("objdump"):
        assembly = subprocess.run(["objdump", "-d", str(libs[0])], capture_output=True, text=True).stdout
        assert "zmm" not in assembly
