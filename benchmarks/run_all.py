"""`make bench`: sets up the peers, runs every benchmark against its peer, then assembles BENCHMARKS.md.

    .venv/bin/python -m benchmarks.run_all             # full sizes (hours on a 2-core CPU; run on a quiet machine)
    .venv/bin/python -m benchmarks.run_all --quick     # tiny configs, 1 repeat: a few minutes, checks the plumbing

Each benchmark runs in its own process (memory is returned between them) and writes benchmarks/results/<name>.md
(date, machine, exact command, its table); `benchmarks.report` then assembles BENCHMARKS.md from those files.
`--quick` writes its tables to `--out` (default /tmp/dalle-bench-quick) and leaves results/ and BENCHMARKS.md alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks import common, peers

# (result name, module, takes --quick, runs in quick mode)
BENCHMARKS = (
    ("generation", "benchmarks.bench_generation", True, True),
    ("decode_floor", "benchmarks.decode_floor", True, True),
    ("precision", "benchmarks.bench_precision", True, True),
    ("train_step", "benchmarks.bench_train_step", True, True),
    ("vqgan_speed", "benchmarks.bench_vqgan", True, True),
    ("vqgan_quality", "benchmarks.bench_vqgan_quality", False, False),  # ~10 min of VQGAN training; full only
    ("generate_latency", "benchmarks.bench_generate_latency", True, True),
    ("dry_run", "benchmarks.dry_run", False, False),
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configs, 1 repeat; tables go to --out")
    p.add_argument("--out", default="", help="results directory (default: benchmarks/results, quick: "
                                             "/tmp/dalle-bench-quick)")
    p.add_argument("--only", default="", help="comma-separated result names, e.g. generation,train_step")
    p.add_argument("--no-setup", action="store_true", help="do not create/check the peer environments")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out or ("/tmp/dalle-bench-quick" if args.quick else common.RESULTS))
    os.makedirs(out, exist_ok=True)
    if not args.no_setup:
        peers.ensure_all()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env[peers.RESULTS_ENV] = out
    env["PYTHONPATH"] = peers.ROOT + os.pathsep + env.get("PYTHONPATH", "")
    only = [x for x in args.only.split(",") if x]
    failed, done = [], []
    for name, module, has_quick, in_quick in BENCHMARKS:
        if (only and name not in only) or (args.quick and not in_quick):
            continue
        cmd = [sys.executable, "-m", module] + (["--quick"] if args.quick and has_quick else [])
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=peers.ROOT, env=env)
        print(f"== {name}: {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'} in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        (failed if r.returncode else done).append(name)
    if out == os.path.abspath(common.RESULTS):
        subprocess.run([sys.executable, "-m", "benchmarks.report"], cwd=peers.ROOT, env=env, check=True)
    else:
        print(f"tables in {out}: {', '.join(sorted(f for f in os.listdir(out) if f.endswith('.md')))}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
