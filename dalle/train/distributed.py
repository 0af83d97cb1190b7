"""Multi-host setup: `jax.distributed` from flags or environment, before anything touches devices."""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "DALLE_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "DALLE_NUM_PROCESSES"
ENV_PROCESS_ID = "DALLE_PROCESS_ID"

_initialized = False


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 120) -> bool:
    """Joins a multi-process run when one is described (flags first, then DALLE_* variables).

    Returns True when `jax.distributed` was initialized. On TPU pods and SLURM, jax detects everything itself:
    set DALLE_COORDINATOR=auto. With nothing set this is a no-op (single process).
    """
    global _initialized
    if _initialized:
        return True
    coordinator = coordinator or os.environ.get(ENV_COORDINATOR)
    if not coordinator:
        return False
    if coordinator == "auto":
        jax.distributed.initialize()
    else:
        num_processes = num_processes if num_processes is not None else int(os.environ.get(ENV_NUM_PROCESSES, "0"))
        process_id = process_id if process_id is not None else int(os.environ.get(ENV_PROCESS_ID, "-1"))
        if num_processes <= 0 or not 0 <= process_id < num_processes:
            raise ValueError(
                f"multi-host run needs a process count and an id in [0, count): got num_processes={num_processes}, "
                f"process_id={process_id} (flags --num_processes/--process_id or {ENV_NUM_PROCESSES}/{ENV_PROCESS_ID})"
            )
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
        )
    _initialized = True
    return True


def is_main_process() -> bool:
    """Only process 0 logs, writes summaries and prints progress."""
    return jax.process_index() == 0
