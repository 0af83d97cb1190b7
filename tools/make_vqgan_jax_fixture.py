"""Golden fixture from vqgan-jax itself (patil-suraj/vqgan-jax, the Flax VQGAN whose checkpoints dalle-mini
publishes): a tiny random-weight `VQModel`, its parameter tree exactly as vqgan-jax creates and saves it, an input,
its codes and its decoded image, in tests/fixtures/vqgan_jax_f2_64.npz (read by tests/test_convert_vqgan.py).

vqgan-jax is not on PyPI: pass a checkout of its repository (a work tree, or a bare git directory whose HEAD is
used) as `--src`; it is imported from there, nothing of it is copied. It runs on the jax 0.4.13 / flax 0.6.11 /
transformers 4.25.1 of dalle-mini's era, i.e. in the peer venv of tools/make_dalle_mini_fixtures.py. From the repo
root:

    python tools/make_dalle_mini_fixtures.py --setup      # creates .venv-dallemini (a few minutes of pip)
    .venv-dallemini/bin/python tools/make_vqgan_jax_fixture.py --src PATH/TO/vqgan-jax

The architecture (ARCH) is the smallest that has every kind of block vqgan-jax writes: a `nin_shortcut` in the
encoder and in the decoder (ch_mult (2, 1): 32 -> 64 -> 32 channels), attention at side 8 in both, a Downsample and
an Upsample conv, the mid blocks; ch = 32 because vqgan-jax's GroupNorms have 32 groups.

The weights are vqgan-jax's own init (`VQModel(config, seed=...)`) plus seeded noise on every norm scale and every
bias (its init leaves them 1 and 0, which would leave them untested), then rounded to float16 precision so the npz
can hold them as float16 losslessly (under 1 MB); vqgan-jax runs on those float32 values. The codebook is replaced
by vqgan-jax's own encoder outputs for other random images (plus noise), so that the codes spread over it.

The fixture holds: `param/<"/"-joined path>` for every leaf of the tree `save_pretrained` wrote (names and shapes
as vqgan-jax's init made them; checked here against the written flax_model.msgpack), `param_dtype` (the dtype of
those leaves in the msgpack, float32), `config_json` (the exact text of the config.json `save_pretrained` wrote),
`image` [B, 16, 16, 3] (the input, in [-1, 1]), `codes` [B, 64] (`VQModel.encode`'s indices), `decoded`
[B, 16, 16, 3] (`VQModel.decode_code(codes)`, unclipped), `msgpack_sha256` (of the flax_model.msgpack it wrote: the
test re-serializes the tree and must get the same bytes), `upstream_commit` and `versions` (jax, flax,
transformers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "vqgan_jax_f2_64.npz")

ARCH = dict(resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=(2, 1), num_res_blocks=1, attn_resolutions=(8,),
            z_channels=16, n_embed=64, embed_dim=8, dropout=0.0)
BATCH = 2


def checkout(src: str, tmp: str) -> tuple[str, str]:
    """(directory holding the `vqgan_jax` package, its commit). A bare repository is exported (HEAD) into `tmp`."""
    git = ["git", "-C", src]
    bare = subprocess.run(git + ["rev-parse", "--is-bare-repository"], capture_output=True, text=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if bare.returncode == 0 and bare.stdout.strip() == "true":
        archive = subprocess.run(git + ["archive", "HEAD"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        src = tmp
    if not os.path.isfile(os.path.join(src, "vqgan_jax", "modeling_flax_vqgan.py")):
        raise SystemExit(f"{src}: no vqgan_jax/modeling_flax_vqgan.py (pass a vqgan-jax checkout as --src)")
    return src, commit or "unknown"


def _nest(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return tree


def make(src: str, commit: str, seed: int) -> dict[str, Any]:
    """Runs vqgan-jax's VQModel on its own (perturbed) init; returns the fixture's arrays."""
    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import transformers
    from flax import serialization
    from flax.core import unfreeze
    from flax.traverse_util import flatten_dict

    sys.path.insert(0, src)
    from vqgan_jax.configuration_vqgan import VQGANConfig
    from vqgan_jax.modeling_flax_vqgan import VQModel

    r = ARCH["resolution"]
    model = VQModel(VQGANConfig(**ARCH), input_shape=(1, r, r, ARCH["in_channels"]), seed=seed, dtype=jnp.float32)
    init = flatten_dict(unfreeze(jax.device_get(model.params)), sep="/")
    rs = np.random.RandomState(seed)

    def fp16_exact(v: np.ndarray) -> np.ndarray:
        return np.asarray(v, np.float32).astype(np.float16).astype(np.float32)

    flat = {}
    for k, v in init.items():
        v = np.asarray(v, np.float32)
        noise = rs.standard_normal(v.shape).astype(np.float32)
        if k.endswith("/scale"):  # GroupNorm scales: init 1
            v = v + 0.2 * noise
        elif k.endswith("/bias"):  # GroupNorm offsets and conv biases: init 0
            v = v + 0.1 * noise
        flat[k] = fp16_exact(v)

    def pre_quant(module, x):  # the vectors VectorQuantizer matches: quant_conv(encoder(x))
        return module.quant_conv(module.encoder(x))

    codebook = "quantize/embedding/embedding"
    others = rs.uniform(-1, 1, (4, r, r, ARCH["in_channels"])).astype(np.float32)
    z = np.asarray(model.module.apply({"params": _nest(flat)}, others, method=pre_quant)).reshape(-1, ARCH["embed_dim"])
    pick = rs.permutation(len(z))[:ARCH["n_embed"]]
    flat[codebook] = fp16_exact(z[pick] + 0.01 * z.std() * rs.standard_normal((ARCH["n_embed"], ARCH["embed_dim"])))
    params = jax.tree_util.tree_map(jnp.asarray, _nest(flat))

    image = rs.uniform(-1, 1, (BATCH, r, r, ARCH["in_channels"])).astype(np.float32)
    _, codes = model.encode(image, params=params)
    codes = np.asarray(codes).astype(np.int32)
    decoded = np.asarray(model.decode_code(codes, params=params), np.float32)

    # The codes must not hinge on float rounding: the nearest code has to win by a clear margin.
    zi = np.asarray(model.module.apply({"params": params}, image, method=pre_quant), np.float64)
    d = ((zi.reshape(-1, 1, ARCH["embed_dim"]) - flat[codebook][None].astype(np.float64)) ** 2).sum(-1)
    best2 = np.sort(d, axis=1)[:, :2]
    margin = float(((best2[:, 1] - best2[:, 0]) / best2[:, 1]).min())
    if margin < 1e-3 or not np.array_equal(np.argmin(d, axis=1), codes.reshape(-1)):
        raise RuntimeError(f"near-tie in the codes (relative margin {margin:.2g}): choose another seed")
    if len(np.unique(codes)) < 16:
        raise RuntimeError(f"only {len(np.unique(codes))} distinct codes: choose another seed")

    # What vqgan-jax writes: the fixture's tree must be exactly the saved one.
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, params=params)
        with open(os.path.join(tmp, "config.json")) as f:
            config_json = f.read()
        with open(os.path.join(tmp, "flax_model.msgpack"), "rb") as f:
            msgpack = f.read()
    saved = flatten_dict(serialization.msgpack_restore(msgpack), sep="/")
    if saved.keys() != init.keys():
        raise RuntimeError(f"saved tree differs from init: {sorted(set(saved) ^ set(init))}")
    dtypes = {str(np.asarray(v).dtype) for v in saved.values()}
    if len(dtypes) != 1:
        raise RuntimeError(f"saved leaves have several dtypes: {dtypes}")
    for k, v in saved.items():
        if np.shape(v) != np.shape(init[k]) or not np.array_equal(np.asarray(v), flat[k]):
            raise RuntimeError(f"{k}: saved {np.shape(v)} differs from the params given")

    out: dict[str, Any] = {f"param/{k}": v.astype(np.float16) for k, v in flat.items()}
    out.update(param_dtype=np.array(dtypes.pop()), config_json=np.array(config_json), image=image, codes=codes,
               decoded=decoded, upstream_commit=np.array(commit),
               msgpack_sha256=np.array(hashlib.sha256(msgpack).hexdigest()),
               versions=np.array(json.dumps({"jax": jax.__version__, "flax": flax.__version__,
                                             "transformers": transformers.__version__})))
    print(f"{len(flat)} params ({sum(v.size for v in flat.values()):,} values), "
          f"{len(np.unique(codes))} distinct codes, code margin {margin:.3g}, "
          f"decoded in [{decoded.min():.3g}, {decoded.max():.3g}]")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", required=True, help="vqgan-jax checkout (work tree, or bare git dir: its HEAD)")
    parser.add_argument("--out", default=OUT, help="the .npz to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        src, commit = checkout(os.path.abspath(args.src), tmp)
        arrays = make(src, commit, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {os.path.relpath(args.out, ROOT)} ({os.path.getsize(args.out) // 1024} KiB) "
          f"from vqgan-jax {commit[:10]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
