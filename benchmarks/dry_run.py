"""Ahead-of-time compile of the pod configs on fake CPU devices: parameter count and per-device memory.

    .venv/bin/python -m benchmarks.dry_run
"""

from __future__ import annotations

import json
import os

from benchmarks import common

CONFIGS = (("configs/dalle_mini.py", "v3-8 (8 cores)"), ("configs/dalle_mega.py", "v3-256 (256 cores)"))


def main() -> None:
    rows = []
    for spec, target in CONFIGS:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        out = common.run_python(["-m", "dalle", "train", "--config", spec, "--dry_run"], env=env)
        report = json.loads(out[out.index("{"): out.index("\n}") + 2])
        gib = report["per_device_peak_bytes"] / 2**30
        mesh = " x ".join(f"{k} {v}" for k, v in report["mesh"].items())
        rows.append((f"`{spec}`", target, mesh, f"{report['params'] / 1e6:.1f} M",
                     f"{report['state_bytes_total'] / 2**30:.2f} GiB",
                     f"{report['per_device_argument_bytes'] / 2**30:.2f} GiB",
                     f"{report['per_device_temp_bytes'] / 2**30:.2f} GiB", f"{gib:.2f} GiB",
                     "yes" if gib < 16 else "NO", f"{report['compile_s']} s"))
    body = common.table(
        ["config", "target", "mesh", "params", "train state (all devices)", "per-device args", "per-device temp",
         "per-device peak (XLA)", "fits 16 GiB", "compile"], rows)
    body += ("\nPer-device peak = arguments + outputs - donated aliases + temporaries + code, from XLA's memory "
             "analysis of the compiled train step (fake CPU devices; TPU layouts differ somewhat). The state is "
             "fp32 params + optimizer (adafactor), bf16 compute with remat.\n")
    common.write_result("dry_run", "Pod configs: ahead-of-time compile on fake devices",
                        ".venv/bin/python -m benchmarks.dry_run", body)


if __name__ == "__main__":
    main()
