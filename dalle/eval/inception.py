"""The FID InceptionV3 in JAX: TensorFlow's 2015-12-05 graph as pytorch-fid ports it (`pt_inception-2015-12-05-*.pth`).

Why: FID numbers are comparable only when computed with this exact network (pool3, 2048-d) and the same
preprocessing. It differs from torchvision's Inception3 in the patched blocks pytorch-fid uses (FIDInceptionA/C/E_1:
average pools that exclude padding; FIDInceptionE_2: a max pool in the pool branch). Every conv is
conv (no bias) + BatchNorm (eps 1e-3, running statistics) + ReLU.

Params are a flat dict keyed by the torch module path (e.g. "Mixed_5b.branch1x1") holding
{"w": HWIO kernel, "scale", "offset", "mean", "var"}; `CONVS` lists every conv with its geometry so the converter
and tests share one table. Inputs: float images [B, H, W, 3] in [0, 1] (299x299 after the "clean" resize in
dalle/eval/fid.py); outputs pool3 features [B, 2048].

    params = load_inception(checkpoint_dir)
    feats = inception_features(params, images_299)      # jitted, float32 [B, 2048]
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Params = Mapping[str, Mapping[str, jax.Array]]
BN_EPS = 1e-3
INPUT_SIZE = 299
FEATURE_DIM = 2048


def _conv_specs() -> list[tuple[str, int, int, tuple[int, int], int, tuple[int, int]]]:
    """(torch module path, in channels, out channels, kernel (kh, kw), stride, padding (ph, pw))."""
    specs = [
        ("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
        ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
        ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
        ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
        ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0)),
    ]

    def a(name, cin, pool):
        specs.extend([(f"{name}.branch1x1", cin, 64, (1, 1), 1, (0, 0)),
                      (f"{name}.branch5x5_1", cin, 48, (1, 1), 1, (0, 0)),
                      (f"{name}.branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
                      (f"{name}.branch3x3dbl_1", cin, 64, (1, 1), 1, (0, 0)),
                      (f"{name}.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                      (f"{name}.branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
                      (f"{name}.branch_pool", cin, pool, (1, 1), 1, (0, 0))])

    def c(name, c7):
        specs.extend([(f"{name}.branch1x1", 768, 192, (1, 1), 1, (0, 0)),
                      (f"{name}.branch7x7_1", 768, c7, (1, 1), 1, (0, 0)),
                      (f"{name}.branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
                      (f"{name}.branch7x7_3", c7, 192, (7, 1), 1, (3, 0)),
                      (f"{name}.branch7x7dbl_1", 768, c7, (1, 1), 1, (0, 0)),
                      (f"{name}.branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
                      (f"{name}.branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
                      (f"{name}.branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
                      (f"{name}.branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3)),
                      (f"{name}.branch_pool", 768, 192, (1, 1), 1, (0, 0))])

    def e(name, cin):
        specs.extend([(f"{name}.branch1x1", cin, 320, (1, 1), 1, (0, 0)),
                      (f"{name}.branch3x3_1", cin, 384, (1, 1), 1, (0, 0)),
                      (f"{name}.branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
                      (f"{name}.branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
                      (f"{name}.branch3x3dbl_1", cin, 448, (1, 1), 1, (0, 0)),
                      (f"{name}.branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
                      (f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
                      (f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
                      (f"{name}.branch_pool", cin, 192, (1, 1), 1, (0, 0))])

    a("Mixed_5b", 192, 32)
    a("Mixed_5c", 256, 64)
    a("Mixed_5d", 288, 64)
    specs.extend([("Mixed_6a.branch3x3", 288, 384, (3, 3), 2, (0, 0)),
                  ("Mixed_6a.branch3x3dbl_1", 288, 64, (1, 1), 1, (0, 0)),
                  ("Mixed_6a.branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
                  ("Mixed_6a.branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))])
    c("Mixed_6b", 128)
    c("Mixed_6c", 160)
    c("Mixed_6d", 160)
    c("Mixed_6e", 192)
    specs.extend([("Mixed_7a.branch3x3_1", 768, 192, (1, 1), 1, (0, 0)),
                  ("Mixed_7a.branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
                  ("Mixed_7a.branch7x7x3_1", 768, 192, (1, 1), 1, (0, 0)),
                  ("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                  ("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                  ("Mixed_7a.branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))])
    e("Mixed_7b", 1280)
    e("Mixed_7c", 2048)
    return specs


CONVS = _conv_specs()
_GEOMETRY = {name: (k, s, p) for name, _, _, k, s, p in CONVS}


def torch_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of pytorch-fid's `pt_inception-2015-12-05-*.pth` with its shape (fc = the 1008-way classifier,
    present in the file but unused for pool3 features)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, cin, cout, (kh, kw), _, _ in CONVS:
        out[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.bn.{k}"] = (cout,)
        out[f"{name}.bn.num_batches_tracked"] = ()
    out["fc.weight"] = (1008, 2048)
    out["fc.bias"] = (1008,)
    return out


def from_torch_state_dict(sd: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Our params from a torch-named state dict; checks every key and shape (raises ValueError naming them)."""
    want = torch_state_dict_shapes()
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    if missing or extra:
        raise ValueError(f"not the FID Inception state dict: missing {missing[:6]} ({len(missing)}), "
                         f"unexpected {extra[:6]} ({len(extra)})")
    for k, shape in want.items():
        if tuple(np.shape(sd[k])) != shape:
            raise ValueError(f"state dict entry {k!r} has shape {tuple(np.shape(sd[k]))}, expected {shape}")
    params = {}
    for name, *_ in CONVS:
        f = lambda k: np.asarray(sd[f"{name}.{k}"], np.float32)  # noqa: E731
        params[name] = {"w": f("conv.weight").transpose(2, 3, 1, 0), "scale": f("bn.weight"),
                        "offset": f("bn.bias"), "mean": f("bn.running_mean"), "var": f("bn.running_var")}
    return params


# ----------------------------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------------------------
def _conv(params: Params, name: str, x: jax.Array) -> jax.Array:
    p = params[name]
    (_, _), stride, (ph, pw) = _GEOMETRY[name]
    y = jax.lax.conv_general_dilated(x, p["w"], (stride, stride), ((ph, ph), (pw, pw)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    y = (y - p["mean"]) * (p["scale"] / jnp.sqrt(p["var"] + BN_EPS)) + p["offset"]
    return jax.nn.relu(y)


def _max_pool(x: jax.Array, k: int, s: int, pad: int = 0) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1),
                                 ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_3x3_same_excl(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average that ignores the zero padding (TensorFlow's; torch `count_include_pad=False`)."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    ones = jnp.ones((1, x.shape[1], x.shape[2], 1), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    return total / count


def _block_a(p, n, x):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b5 = _conv(p, f"{n}.branch5x5_2", _conv(p, f"{n}.branch5x5_1", x))
    b3 = _conv(p, f"{n}.branch3x3dbl_3", _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x)))
    bp = _conv(p, f"{n}.branch_pool", _avg_pool_3x3_same_excl(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


def _block_b(p, n, x):
    b3 = _conv(p, f"{n}.branch3x3", x)
    bd = _conv(p, f"{n}.branch3x3dbl_3", _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x)))
    return jnp.concatenate([b3, bd, _max_pool(x, 3, 2)], axis=-1)


def _block_c(p, n, x):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b7 = x
    for i in (1, 2, 3):
        b7 = _conv(p, f"{n}.branch7x7_{i}", b7)
    bd = x
    for i in (1, 2, 3, 4, 5):
        bd = _conv(p, f"{n}.branch7x7dbl_{i}", bd)
    bp = _conv(p, f"{n}.branch_pool", _avg_pool_3x3_same_excl(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


def _block_d(p, n, x):
    b3 = _conv(p, f"{n}.branch3x3_2", _conv(p, f"{n}.branch3x3_1", x))
    b7 = x
    for i in (1, 2, 3, 4):
        b7 = _conv(p, f"{n}.branch7x7x3_{i}", b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 3, 2)], axis=-1)


def _block_e(p, n, x, max_pool: bool):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b3 = _conv(p, f"{n}.branch3x3_1", x)
    b3 = jnp.concatenate([_conv(p, f"{n}.branch3x3_2a", b3), _conv(p, f"{n}.branch3x3_2b", b3)], axis=-1)
    bd = _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x))
    bd = jnp.concatenate([_conv(p, f"{n}.branch3x3dbl_3a", bd), _conv(p, f"{n}.branch3x3dbl_3b", bd)], axis=-1)
    pooled = _max_pool(x, 3, 1, 1) if max_pool else _avg_pool_3x3_same_excl(x)
    bp = _conv(p, f"{n}.branch_pool", pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def forward(params: Params, images: jax.Array, return_block1: bool = False):
    """images float [B, H, W, 3] in [0, 1] -> pool3 [B, 2048] (and the 192-channel block-1 map when asked).

    Like pytorch-fid with `resize_input` done beforehand (the clean resize) and `normalize_input` (x * 2 - 1)."""
    p = params
    x = images.astype(jnp.float32) * 2.0 - 1.0
    x = _conv(p, "Conv2d_1a_3x3", x)
    x = _conv(p, "Conv2d_2a_3x3", x)
    x = _conv(p, "Conv2d_2b_3x3", x)
    x = _max_pool(x, 3, 2)
    x = _conv(p, "Conv2d_3b_1x1", x)
    x = _conv(p, "Conv2d_4a_3x3", x)
    x = _max_pool(x, 3, 2)
    block1 = x
    for n in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _block_a(p, n, x)
    x = _block_b(p, "Mixed_6a", x)
    for n in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _block_c(p, n, x)
    x = _block_d(p, "Mixed_7a", x)
    x = _block_e(p, "Mixed_7b", x, max_pool=False)
    x = _block_e(p, "Mixed_7c", x, max_pool=True)
    pool3 = jnp.mean(x, axis=(1, 2))
    return (pool3, block1) if return_block1 else pool3


@functools.lru_cache(maxsize=None)
def _jitted():
    return jax.jit(forward)


def inception_features(params: Params, images: Any, batch_size: int = 32) -> np.ndarray:
    """pool3 features of float images [N, 299, 299, 3] in [0, 1], in fixed-size batches (one compile)."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {x.shape}")
    fn = _jitted()
    outs = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        n = len(chunk)
        if n < batch_size and len(x) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        outs.append(np.asarray(fn(params, chunk), np.float64)[:n])
    return np.concatenate(outs) if outs else np.zeros((0, FEATURE_DIM))


def load_inception(directory: str) -> Params:
    """Params from a `dalle convert inception` directory; raises FileNotFoundError / CheckpointError naming it."""
    import os

    from dalle import model_dir as checkpoint

    if not directory or not os.path.isdir(directory):
        raise FileNotFoundError(f"FID Inception checkpoint {directory!r} does not exist: make it with "
                                "`dalle convert inception --from pt_inception-2015-12-05-6726825d.pth --out DIR`")
    config, params = checkpoint.load_model(directory)
    kind = config.get("model", {}).get("kind") if "model" in config else None
    if kind != "fid_inception":
        raise checkpoint.CheckpointError(f"{directory!r} holds a model of kind {kind!r}, not fid_inception")
    return params
