"""One process of the two-process `dalle encode` folder check: joins 127.0.0.1:PORT and checks a folder that is
either shared (the same path for both) or not (each process its own)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(process_id: int, port: int, folder: str) -> None:
    from dalle.data import encode
    from dalle.train import distributed

    distributed.initialize(f"127.0.0.1:{port}", 2, process_id, timeout_s=60)
    os.makedirs(folder, exist_ok=True)
    try:
        encode.check_shared_dir(folder, process_id)
        print("SHARED", flush=True)
    except ValueError as e:
        print(f"REFUSED {e}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
