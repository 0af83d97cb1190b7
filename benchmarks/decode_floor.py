"""The memory-bandwidth floor of KV-cached decoding on this machine: what limits generation at batch 8.

    .venv/bin/python -m benchmarks.decode_floor            # config/mini, batch 1 and 8 (about a minute)
    .venv/bin/python -m benchmarks.decode_floor --quick    # a small array, for the plumbing test

Every decode step must read each weight matrix a step uses once (the rows of a step share it; the cross-attention
key/value projections run once per prompt, not per step), the filled part of the self-attention KV cache (a step
at position t needs t + 1 positions) and the cross-attention keys/values of every row. Dividing those bytes by the
machine's measured read bandwidth gives the least time a 256-token call can take in fp32, however good the
kernels: the number the generation table is to be read against.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from benchmarks import common
from benchmarks.bench_generation import IMAGE, TEXT, model_configs

BYTES = 4  # fp32, as the generation benchmark runs


def read_bandwidth(mib: int = 1024, repeats: int = 5) -> float:
    """GB/s of a jitted sum over a `mib`-MiB fp32 array (streams it once from memory), median of `repeats`."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    f(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t)
    return x.size * 4 / statistics.median(times) / 1e9


MEAN_FILLED = (2 + IMAGE) / 2  # steps at positions 1..IMAGE-1 read 2..IMAGE cached positions


def bytes_per_step(cfg, rows: int) -> dict:
    """Bytes one cached decode step reads for `rows` rows (guided: 2 per image), from the config's sizes."""
    d, ffn, layers, vocab = cfg.d_model, cfg.decoder_ffn_dim, cfg.decoder_layers, cfg.image_vocab_size
    ffn_mats = 3 if cfg.use_glu else 2
    per_layer = 4 * d * d + 2 * d * d + ffn_mats * d * ffn  # self-attn, cross-attn q/out, feed-forward
    weights = (layers * per_layer + d * (vocab + cfg.image_extra_tokens)) * BYTES
    filled = MEAN_FILLED  # positions a step's attention must read, averaged over the call
    self_cache = layers * 2 * rows * filled * d * BYTES
    cross = layers * 2 * rows * TEXT * d * BYTES
    return {"weights": weights, "self_cache": self_cache, "cross": cross}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batches", default="1,8")
    args = p.parse_args(argv)
    from benchmarks import peers

    peers.use_results_dir_from_env()
    from benchmarks import matmul_peak

    gbs = read_bandwidth(mib=64 if args.quick else 1024, repeats=2 if args.quick else 5)
    peak = matmul_peak.measure(sizes=matmul_peak.QUICK_SIZES if args.quick else matmul_peak.SIZES)["peak_gflops"]
    cfg = model_configs(quick=False)["mini"]
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        parts = bytes_per_step(cfg, 2 * b)
        memory = sum(parts.values()) / (gbs * 1e9)
        # 2 FLOPs per weight per row, plus q.k and w.v over the cache (the bytes / 4 of each are multiply-adds)
        flops = 2 * 2 * b * parts["weights"] / BYTES + 2 * (parts["self_cache"] + parts["cross"]) / BYTES
        compute = flops / (peak * 1e9)
        step = max(memory, compute)
        rows.append(("config/mini", b, 2 * b, f"{parts['weights'] / 1e9:.3f}", f"{parts['self_cache'] / 1e9:.3f}",
                     f"{parts['cross'] / 1e9:.3f}", f"{1e3 * memory:.1f} ms", f"{flops / 1e9:.1f}",
                     f"{1e3 * compute:.1f} ms", f"{step * (IMAGE - 1):.1f} s"))
    body = (f"Measured in the same run: read bandwidth {gbs:.1f} GB/s (jitted sum over a {64 if args.quick else 1024} "
            f"MiB fp32 array, median), fp32 matmul peak {peak:.0f} GFLOP/s (`benchmarks/matmul_peak.py`).\n\n")
    body += common.table(["model", "batch", "rows (guided)", "weights GB/step", "self-attn KV cache GB/step (mean)",
                          "cross-attn K/V GB/step", "memory floor per step", "GFLOP/step", "compute floor per step",
                          f"floor per {IMAGE}-token call"], rows)
    body += (f"\nThe least time a guided fp32 call can take here: each step streams what it must read (weights once, "
             f"the filled part of the cache, {MEAN_FILLED:.0f} positions on average, the text keys/values) at the measured bandwidth, or does its "
             f"FLOPs at the measured matmul peak, whichever is longer (the larger of the two floors, times "
             f"{IMAGE - 1} steps). Read against the config/mini generation table: a peer time divided by this floor "
             f"is the largest speed-up any fp32 implementation could show on this machine.\n")
    cmd = ".venv/bin/python -m benchmarks.decode_floor" + (" --quick" if args.quick else "")
    common.write_result("decode_floor", "Decode memory floor on config/mini (what bounds generation)", cmd, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
