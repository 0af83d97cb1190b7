"""One process of the two-process test: 4 fake CPU devices, joins 127.0.0.1:PORT, trains the toy model."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(process_id: int, port: int, out: str) -> None:
    import jax
    import numpy as np

    from dalle import sharding
    from dalle.train import distributed
    from tests import toy_sharded

    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=60)
    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    x, y = toy_sharded.data()
    rows = slice(process_id * 4, (process_id + 1) * 4)  # each host feeds its own half of the global batch
    mesh = sharding.make_mesh(("data", "model"), (4, 2))
    params, _, _ = toy_sharded.train(mesh, x=x[rows], y=y[rows])
    if process_id == 0:
        np.savez(out, **{k.replace("/", "|"): v for k, v in sharding.to_mapping(params).items()})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
