"""Multi-host setup: `jax.distributed` from flags or environment, before anything touches devices."""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "DALLE_COORDINATOR"  # host:port of process 0
ENV_NUM_PROCESSES = "DALLE_NUM_PROCESSES"
ENV_PROCESS_ID = "DALLE_PROCESS_ID"
# Seconds without a heartbeat after which a process counts as dead and the run fails everywhere with an error
# (jax's own default is 100 s; a dead peer otherwise leaves the others blocked in a collective until then).
ENV_HEARTBEAT_TIMEOUT = "DALLE_HEARTBEAT_TIMEOUT_S"
DEFAULT_HEARTBEAT_TIMEOUT_S = 60

_initialized = False


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 120, heartbeat_timeout_s: int | None = None) -> bool:
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
    if heartbeat_timeout_s is None:
        raw = os.environ.get(ENV_HEARTBEAT_TIMEOUT, str(DEFAULT_HEARTBEAT_TIMEOUT_S))
        try:
            heartbeat_timeout_s = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_HEARTBEAT_TIMEOUT} = {raw!r} is not a whole number of seconds") from None
    if heartbeat_timeout_s <= 0:
        raise ValueError(f"the heartbeat timeout must be > 0 seconds, got {heartbeat_timeout_s}")
    if coordinator == "auto":
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)
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
            heartbeat_timeout_seconds=heartbeat_timeout_s,
        )
    _initialized = True
    return True


def is_main_process() -> bool:
    """Only process 0 logs, writes summaries and prints progress."""
    return jax.process_index() == 0
