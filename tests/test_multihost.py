"""Two local processes (jax.distributed on 127.0.0.1, 4 fake devices each) agree with one process."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from dalle import sharding
from tests import toy_sharded

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    port, out = _free_port(), str(tmp_path / "params.npz")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    procs = [
        subprocess.Popen([sys.executable, WORKER, str(i), str(port), out], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    got = np.load(out)
    ref, _, _ = toy_sharded.train(sharding.make_mesh(("data",), (1,), devices=jax.devices()[:1]))
    ref = sharding.to_mapping(ref)
    assert len(got.files) == len(ref)
    for k in got.files:
        np.testing.assert_allclose(got[k], ref[k.replace("|", "/")], atol=1e-5, rtol=1e-5, err_msg=k)
