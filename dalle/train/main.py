"""`dalle train --config configs/x.py[:variant] --workdir DIR [--config.a.b=v ...] [--dry_run]`

Trains the model the config describes (DALL·E model, VQGAN or CLIP: chosen by `model.kind`) with the one train
loop; the same command resumes an interrupted run. Multi-host: pass --coordinator/--num_processes/--process_id
(or DALLE_COORDINATOR=host:port, DALLE_NUM_PROCESSES, DALLE_PROCESS_ID; `auto` on TPU pods) on every host.
Exit codes: 0 finished (or stopped at its time budget, model exported), 1 diverged or cannot resume, 2 bad config,
75 preempted by SIGTERM (checkpoint saved on every host; requeue the same command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Sequence

from dalle import paths
from dalle.cli.args import Parser


def _parser() -> Parser:
    p = Parser(prog="dalle train", description=__doc__.split("\n\n")[1], takes_config=True,
               examples="dalle train --config shapes_tiny --workdir runs/shapes\n"
                        "dalle train --config dalle_mini --dry-run --config.mesh.target_devices=8")
    p.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    p.add_argument("--workdir", help="where checkpoints, logs and the exported model go (required unless --dry_run)")
    p.add_argument("--dry_run", action="store_true",
                   help="compile the train step ahead of time for the configured mesh (mesh.target_devices fake "
                        "devices) and print params and per-device memory; allocates nothing")
    p.add_argument("--coordinator", help="host:port of process 0 for multi-host runs ('auto' on TPU pods)")
    p.add_argument("--num_processes", type=int)
    p.add_argument("--process_id", type=int)
    p.add_argument("--heartbeat_timeout_s", type=int, default=None,
                   help="multi-host: a process silent this long counts as dead and the run stops with an error on "
                        "every host (default: $DALLE_HEARTBEAT_TIMEOUT_S or 60)")
    return p


# A preempted run (SIGTERM) saved its checkpoint and must be requeued: a distinct non-zero code (sysexits'
# EX_TEMPFAIL, "try again later") so that a scheduler restarts it instead of counting it as finished.
EXIT_PREEMPTED = 75


def exit_code(status: str) -> int:
    """The process exit code of a finished `loop.train` (RunResult.status)."""
    return EXIT_PREEMPTED if status == "preempted" else 0


def main(argv: Sequence[str]) -> int:
    from dalle import config as config_lib

    overrides, rest = config_lib.split_config_args(list(argv))
    args = _parser().parse_args(rest)
    if not args.dry_run and not args.workdir:
        print("error: --workdir is required", file=sys.stderr)
        return 2
    if args.dry_run:
        # Fake devices must be requested before jax starts; re-run in a fresh process when they are missing.
        raw = config_lib.load_config(args.config, overrides, validate_config=False)
        target = int(raw.get("mesh", {}).get("target_devices", 0) or 0)
        if target and "jax" not in sys.modules and not os.environ.get("DALLE_DRY_RUN_CHILD"):
            env = dict(os.environ, DALLE_DRY_RUN_CHILD="1", JAX_PLATFORMS="cpu",
                       XLA_FLAGS=f"--xla_force_host_platform_device_count={target}")
            return subprocess.call([sys.executable, "-m", "dalle", "train", *argv], env=env)
    from dalle.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                           heartbeat_timeout_s=args.heartbeat_timeout_s)
    try:
        config = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from dalle.train import checkpointing, loop

    if args.dry_run:
        report = loop.dry_run(config)
        print(json.dumps(report, indent=2))
        gib = report.get("per_device_peak_bytes", 0) / 2**30
        print(f"params: {report['params'] / 1e6:.1f} M, mesh {report['mesh']}, "
              f"per-device memory (XLA estimate): {gib:.2f} GiB")
        return 0
    try:
        result = loop.train(config, args.workdir)
    except (checkpointing.ResumeError, loop.TrainingDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model_dir = paths.join(args.workdir, "model")
    if result.status == "done":
        print(f"done at step {result.step}; model in {model_dir}")
    elif result.status == "time_limit":
        print(f"stopped at the time budget (train.max_minutes) at step {result.step}; model in {model_dir}; "
              f"the same command with a larger --config.train.max_minutes continues the run")
    else:
        print(f"{result.status} at step {result.step}; checkpoint saved, run the same command to resume "
              f"(exit code {exit_code(result.status)})")
    return exit_code(result.status)
