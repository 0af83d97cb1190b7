"""Encode/decode speed of a VQGAN in dalle (JAX) vs the taming-transformers reference (torch), same weights.

    python benchmarks/bench_vqgan.py                      # published f16/16384 shape, 256 px, batch 1 and 8
    python benchmarks/bench_vqgan.py --small --repeats 1  # a seconds-long smoke run (= --quick)
    python -m benchmarks.bench_vqgan                      # the same; writes benchmarks/results/vqgan_speed.md

Random weights (the speed does not depend on them); the reference runs only when requirements-ref.txt is
installed. Prints a markdown table of seconds per batch and per image (median of --repeats, after a warm-up call
that also compiles the jitted functions; that first call is reported separately as "first call").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/bench_vqgan.py`
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

F16 = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 1, 2, 2, 4],
           num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
SMALL = dict(F16, z_channels=32, resolution=32, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16])


FIRST_CALL: dict = {}  # label -> seconds of the warm-up call (includes jit compilation on the jax side)


def _median_time(fn, repeats: int, label: str = "") -> float:
    t = time.perf_counter()
    fn()  # warm-up / compile
    FIRST_CALL[label] = time.perf_counter() - t
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
    p.add_argument("--quick", action="store_true", help="= --small --repeats 1")
    args = p.parse_args(argv)
    from benchmarks import peers as _peers

    _peers.use_results_dir_from_env()
    if args.quick:
        args.small, args.repeats = True, 1

    import jax

    from dalle.modeling.vqgan import convert as convert_vqgan
    from dalle.modeling.vqgan import model as vqgan_lib
    from dalle.modeling.vqgan.api import VQGANTokenizer
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
        t0 = time.perf_counter()
        codes = tok.encode(images)  # the first call: compiles the encoder
        first_encode = time.perf_counter() - t0
        enc = _median_time(lambda: tok.encode(images), args.repeats, f"jax_encode_{b}")
        FIRST_CALL[f"jax_encode_{b}"] = first_encode
        dec = _median_time(lambda: tok.decode(codes), args.repeats, f"jax_decode_{b}")
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

            row.update(torch_encode=_median_time(t_enc, args.repeats, f"torch_encode_{b}"),
                       torch_decode=_median_time(t_dec, args.repeats, f"torch_decode_{b}"))
            with torch.no_grad():
                ref_codes = ref.encode(x)[2][2].reshape(b, grid, grid).numpy()
            row["codes_equal"] = float(np.mean(ref_codes == codes))
        rows.append(row)

    head = (f"VQGAN f{cfg.downsample_factor}/{cfg.n_embed} at {side} px, {vqgan_lib.num_params(params):,} params, "
            f"jax on {jax.device_count()} {jax.devices()[0].platform} device(s)"
            + ("" if ref is not None else "; torch reference not installed"))
    print(head)
    print()
    cols = ["batch", "jax_encode", "jax_decode"] + (["torch_encode", "torch_decode", "codes_equal"] if ref else [])
    header = [c.replace("_", " ") + (" s/img" if c.endswith(("encode", "decode")) else "") for c in cols]
    if ref is not None:
        header += ["encode speed-up", "decode speed-up"]
    header += ["jax first call enc / dec (compile)"]
    table_rows = []
    for r in rows:
        cells = []
        for c in cols:
            v = r[c]
            cells.append(str(v) if c == "batch" else f"{v:.3f}" if c == "codes_equal" else f"{v / r['batch']:.3f}")
        if ref is not None:
            cells += [f"{r['torch_encode'] / r['jax_encode']:.2f}x", f"{r['torch_decode'] / r['jax_decode']:.2f}x"]
        b = r["batch"]
        cells.append(f"{FIRST_CALL[f'jax_encode_{b}']:.2f} s / {FIRST_CALL[f'jax_decode_{b}']:.2f} s")
        table_rows.append(cells)
    from benchmarks import common

    body = head + ".\n\n" + common.table(header, table_rows)
    body += (f"\nSeconds per image: medians of {args.repeats} calls per batch after a warm-up call (the jax warm-up "
             f"includes jit compilation, shown as first call). Speed-up = torch time / jax time (goal: >= 1x). "
             f"codes equal = fraction of encoder codes that match the reference on the same weights. Random "
             f"weights and random uint8 images.\n")
    if ref is not None:
        worst = min(min(r["torch_encode"] / r["jax_encode"], r["torch_decode"] / r["jax_decode"]) for r in rows)
        body += (f"\nGoal (at least as fast as torch): worst speed-up {worst:.2f}x "
                 + ("(met)" if worst >= 1 else f"(MISSED by {1 / worst:.2f}x)") + ".\n")
    cmd = ".venv/bin/python -m benchmarks.bench_vqgan" + (" --quick" if args.quick else
                                                          " --small" if args.small else "")
    if args.batch_sizes != "1,8":
        cmd += f" --batch-sizes {args.batch_sizes}"
    if args.repeats != 3 and not args.quick:
        cmd += f" --repeats {args.repeats}"
    common.write_result("vqgan_speed", "VQGAN f16/16384 encode/decode: ours (jax) vs taming-transformers (torch)"
                        + (" (quick smoke run, tiny model)" if args.small else ""), cmd, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
