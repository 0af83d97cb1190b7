"""Assembles BENCHMARKS.md from benchmarks/results/*.md (each written by its benchmark with date, machine, command).

    .venv/bin/python -m benchmarks.report
"""

from __future__ import annotations

import os

from benchmarks import common

ORDER = ("generation_mini", "generation_shapes_tiny", "train_step", "vqgan_speed", "vqgan_quality", "generate_latency", "dry_run")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INTRO = """# Benchmarks

Every table below was written by the benchmark named in its header (`make bench` runs them all, then this file is
assembled by `python -m benchmarks.report`); numbers are never typed by hand. Peers run on the same machine in the
same session: dalle-mini 0.1.5 in its own venv (`benchmarks/peers.py`), taming-transformers with torch 2.13.0 CPU.
"""


def main() -> None:
    files = sorted(os.listdir(common.RESULTS)) if os.path.isdir(common.RESULTS) else []
    names = [f[:-3] for f in files if f.endswith(".md")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    parts = [INTRO]
    for n in names:
        with open(os.path.join(common.RESULTS, n + ".md")) as f:
            parts.append(f.read())
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(parts))
    print(f"BENCHMARKS.md: {len(names)} section(s): {', '.join(names)}")


if __name__ == "__main__":
    main()
