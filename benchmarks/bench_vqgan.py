"""Encode/decode speed of a VQGAN in dalle (JAX) vs the taming-transformers reference (torch), same weights.

    python benchmarks/bench_vqgan.py                      # published f16/16384 shape, 256 px, batch 1 and 8
    python benchmarks/bench_vqgan.py --small --repeats 1  # a seconds-long smoke run

Random weights (the speed does not depend on them); the reference runs only when requirements-ref.txt is
installed. Prints a markdown table of seconds per batch and per image (median of --repeats, after a warm-up call
that also compiles the jitted functions).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import numpy as np

F16 = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 1, 2, 2, 4],
           num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
SMALL = dict(F16, z_channels=32, resolution=32, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16])


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _reference(dd, n_embed, embed_dim):
    try:
        import torch
        import pytorch_lightning  # noqa: F401  (before the torchvision stub)
    except ImportError:
        return None, None
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:
            sys.modules["torchvision"] = types.ModuleType("torchvision")
    from taming.models.vqgan import VQModel

    torch.manual_seed(0)
    model = VQModel(ddconfig=dd, lossconfig={"target": "torch.nn.Identity"}, n_embed=n_embed,
                    embed_dim=embed_dim).eval()
    return torch, model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true", help="a tiny 32 px model (smoke test)")
    args = p.parse_args(argv)

    import jax

    from dalle.modeling import convert_vqgan, vqgan as vqgan_lib
    from dalle.modeling.vqgan_api import VQGANTokenizer
    from dalle import sharding

    dd = SMALL if args.small else F16
    n_embed, embed_dim = (64, 8) if args.small else (16384, 256)
    torch, ref = _reference(dd, n_embed, embed_dim)
    arch = dict(resolution=dd["resolution"], ch=dd["ch"], ch_mult=tuple(dd["ch_mult"]),
                num_res_blocks=dd["num_res_blocks"], attn_resolutions=tuple(dd["attn_resolutions"]),
                z_channels=dd["z_channels"], n_embed=n_embed, embed_dim=embed_dim)
    config = convert_vqgan.model_config(arch)
    cfg = vqgan_lib.VQGANConfig.from_config(config)
    if ref is not None:
        params, _ = convert_vqgan.convert_taming_state_dict(ref.state_dict(), cfg)
    else:
        params = jax.jit(vqgan_lib.VQGAN(cfg).init)(jax.random.key(0))
    mesh = sharding.make_mesh(("data",), (-1,))
    tok = VQGANTokenizer(params, config, mesh=mesh)
    side = dd["resolution"]
    rows = []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        images = np.random.default_rng(0).integers(0, 256, (b, side, side, 3), dtype=np.uint8)
        codes = tok.encode(images)
        enc = _median_time(lambda: tok.encode(images), args.repeats)
        dec = _median_time(lambda: tok.decode(codes), args.repeats)
        row = {"batch": b, "jax_encode": enc, "jax_decode": dec}
        if ref is not None:
            x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
            grid = side // cfg.downsample_factor
            flat = torch.from_numpy(codes.reshape(-1).astype(np.int64))

            def t_enc():
                with torch.no_grad():
                    ref.encode(x)

            def t_dec():
                with torch.no_grad():
                    ref.decode(ref.quantize.get_codebook_entry(flat, (b, grid, grid, embed_dim)))

            row.update(torch_encode=_median_time(t_enc, args.repeats), torch_decode=_median_time(t_dec, args.repeats))
            with torch.no_grad():
                ref_codes = ref.encode(x)[2][2].reshape(b, grid, grid).numpy()
            row["codes_equal"] = float(np.mean(ref_codes == codes))
        rows.append(row)

    print(f"VQGAN f{cfg.downsample_factor}/{cfg.n_embed} at {side} px, {vqgan_lib.num_params(params):,} params, "
          f"jax on {jax.device_count()} {jax.devices()[0].platform} device(s)"
          + ("" if ref is not None else "; torch reference not installed"))
    print()
    cols = ["batch", "jax_encode", "jax_decode"] + (["torch_encode", "torch_decode", "codes_equal"] if ref else [])
    print("| " + " | ".join(c.replace("_", " ") + (" s/img" if c.endswith(("encode", "decode")) else "")
                            for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(str(v) if c == "batch" else f"{v:.3f}" if c == "codes_equal" else f"{v / r['batch']:.3f}")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
