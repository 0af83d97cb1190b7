"""FID Inception against pytorch-fid's network (random weights from a seed, fixture from
tools/make_eval_fixtures.py), the Fréchet distance against its `calculate_frechet_distance`, known values on
Gaussians, KID, and the clean resize."""

from __future__ import annotations

import numpy as np
import pytest

from dalle.eval import fid, inception
from tools.make_eval_fixtures import random_inception_tensor


def test_inception_matches_pytorch_fid():
    """pool3 (2048-d) and block-1 features of pytorch-fid's InceptionV3 (FIDInceptionA/C/E, random weights drawn
    from the fixture's seed over OUR key table: a missing/misnamed/mis-shaped key would fail torch's strict
    load when the fixture was made, or give different features here) within 1e-4."""
    z = np.load("tests/fixtures/inception_fid.npz")
    shapes = inception.torch_state_dict_shapes()
    assert sorted(shapes) == sorted(z["keys"].tolist())
    assert [str(shapes[k]) for k in z["keys"]] == z["shapes"].tolist()
    sd = {k: random_inception_tensor(int(z["seed"]), k, s) for k, s in shapes.items()}
    params = inception.from_torch_state_dict(sd)
    import jax

    pool3, block1 = jax.jit(inception.forward, static_argnums=2)(
        params, z["images_uint8"].astype(np.float32) / 255.0, True)
    np.testing.assert_allclose(np.asarray(pool3), z["pool3"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(block1)[:, ::7, ::7], z["block1"], atol=1e-4, rtol=0)
    assert np.abs(z["pool3"]).max() > 0.5  # the comparison is not between near-zero vectors


def test_from_torch_state_dict_names_bad_keys():
    shapes = inception.torch_state_dict_shapes()
    sd = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    bad = dict(sd)
    bad["Mixed_5b.branch1x1.conv.weight"] = np.zeros((64, 192, 3, 3), np.float32)
    with pytest.raises(ValueError, match="Mixed_5b.branch1x1.conv.weight"):
        inception.from_torch_state_dict(bad)
    del sd["fc.bias"]
    with pytest.raises(ValueError, match="fc.bias"):
        inception.from_torch_state_dict(sd)


@pytest.mark.parametrize("tag,n_a,n_b", [("full", None, None), ("singular", 10, 12)])
def test_frechet_matches_pytorch_fid(tag, n_a, n_b):
    """The same number as pytorch-fid's calculate_frechet_distance, including its eps path (n < d)."""
    z = np.load("tests/fixtures/inception_frechet.npz")
    a, b = z["feats_a"][:n_a], z["feats_b"][:n_b]
    got = fid.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    # The singular case takes pytorch-fid's eps path, whose sqrtm of a near-singular product differs between CPUs'
    # LAPACK builds in the 9th digit (seen: 63.6494340761 here, 63.6494341720 in the fixture).
    assert got == pytest.approx(float(z[f"{tag}_value"]), rel=1e-9 if tag == "full" else 1e-7, abs=1e-9)


def test_fid_of_a_set_against_itself_is_zero():
    feats = np.random.default_rng(0).standard_normal((500, 64)) @ np.random.default_rng(1).standard_normal((64, 64))
    s = fid.compute_statistics(feats)
    assert abs(fid.frechet_distance(s, s)) <= 1e-6


def test_fid_known_values_on_gaussians():
    """Closed forms: N(m1, I) vs N(m2, I) -> |m1 - m2|^2; N(0, a^2 I) vs N(0, b^2 I) -> d (a - b)^2; and for
    commuting diagonal covariances sum (sqrt(s1) - sqrt(s2))^2."""
    d = 8
    eye = np.eye(d)
    m1, m2 = np.arange(d, dtype=float), np.arange(d, dtype=float)[::-1]
    assert fid.frechet_distance(m1, eye, m2, eye) == pytest.approx(float(np.sum((m1 - m2) ** 2)), rel=1e-12)
    assert fid.frechet_distance(np.zeros(d), 4 * eye, np.zeros(d), 9 * eye) == pytest.approx(d * 1.0, rel=1e-12)
    s1, s2 = np.linspace(0.5, 3, d), np.linspace(2, 0.1, d)
    want = float(np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2))
    assert fid.frechet_distance(np.zeros(d), np.diag(s1), np.zeros(d), np.diag(s2)) == pytest.approx(want, rel=1e-10)
    # sampled Gaussians approach the closed form
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20000, 4))
    y = rng.standard_normal((20000, 4)) * 2 + 1
    assert fid.frechet_distance(fid.compute_statistics(x), fid.compute_statistics(y)) == pytest.approx(8.0, rel=0.03)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_is_unbiased_and_separates():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 16))
    b = rng.standard_normal((400, 16))
    same, _ = fid.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    assert abs(same) < 0.01  # unbiased: ~0 for one distribution (can be slightly negative)
    shifted, std = fid.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert shifted > 0.5 and std < shifted
    # exact value by hand for tiny sets without subsampling randomness (m = all rows)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    k = lambda p, q: (p @ q.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - np.trace(kxx)) / 20 + (kyy.sum() - np.trace(kyy)) / 20 - 2 * kxy.mean())
    got, _ = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=5)
    assert got == pytest.approx(want, rel=1e-10)


def test_clean_resize_is_pil_bicubic_on_floats():
    from PIL import Image

    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    got = fid.clean_resize(im, 299)
    assert got.shape == (1, 299, 299, 3) and got.dtype == np.float32
    ch = np.asarray(Image.fromarray(im[0, :, :, 1].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC))
    np.testing.assert_allclose(got[0, :, :, 1], np.clip(ch, 0, 255) / 255.0, atol=1e-6)
    assert 0.0 <= got.min() and got.max() <= 1.0
    # not the uint8 PIL path: that one rounds, this one keeps fractions
    assert np.any(np.abs(got * 255 - np.round(got * 255)) > 1e-3)
