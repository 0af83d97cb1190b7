"""The machine's measured matmul peak (fp32 GFLOP/s with jax), the denominator of MFU in the train-step benchmark.

    .venv/bin/python -m benchmarks.matmul_peak [--quick]

Square fp32 matmuls of a few sizes, jitted and compiled first; each size is timed `repeats` times and the best
GFLOP/s over sizes and runs is the peak (2 n^3 FLOPs per product). The last measured peak is in
benchmarks/results/train_step.md (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

SIZES = (2048, 4096)
QUICK_SIZES = (256, 512)


def measure(sizes=SIZES, repeats: int = 5, dtype: str = "float32") -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rs = np.random.RandomState(0)
    f = jax.jit(lambda a, b: a @ b)
    per_size = {}
    for n in sizes:
        a = jnp.asarray(rs.standard_normal((n, n)), dtype)
        b = jnp.asarray(rs.standard_normal((n, n)), dtype)
        f(a, b).block_until_ready()  # compile + warm-up
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            rates.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
        per_size[n] = {"best_gflops": max(rates), "median_gflops": sorted(rates)[len(rates) // 2]}
    best = max(per_size, key=lambda n: per_size[n]["best_gflops"])
    return {"peak_gflops": per_size[best]["best_gflops"], "at_size": best, "dtype": dtype, "per_size": per_size,
            "backend": jax.default_backend(), "devices": jax.device_count()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    out = measure(QUICK_SIZES if args.quick else SIZES, 2 if args.quick else 5, args.dtype)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
