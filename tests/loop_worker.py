"""Runs the toy training in its own process, for kill -9 / SIGTERM / two-process tests of the train loop."""

import os
import sys

if len(sys.argv) > 4 and sys.argv[4] == "multi":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(workdir: str, num_steps: int, slow: float, mode: str = "single", pid: int = 0, port: int = 0) -> None:
    import time

    import jax

    from dalle.train import distributed, loop
    from tests import toy_task

    if mode == "multi":
        distributed.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=60)
    config = toy_task.toy_config(**{"train.num_steps": num_steps})
    if mode == "multi":
        config.mesh.shape = (4, 1, 2)
    task = toy_task.ToyTask(config)
    if slow:
        inner = task.train_step

        def slowed(state, batch, rng):
            out = inner(state, batch, rng)
            jax.debug.callback(lambda s: (print(f"trained step {int(s)}", flush=True), time.sleep(slow)),
                               out[0]["step"])
            return out

        task.train_step = slowed
    result = loop.train(config, workdir, task)
    print(f"RESULT status={result.status} step={result.step}", flush=True)
    from dalle.train import main as train_main

    sys.exit(train_main.exit_code(result.status))


if __name__ == "__main__":
    a = sys.argv
    main(a[1], int(a[2]), float(a[3]), *(a[4:5] or ["single"]), *[int(x) for x in a[5:7]])
