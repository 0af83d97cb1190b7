"""The train loop: loss falls, exact resume (also after kill -9), SIGTERM, NaN guard, meshes, two processes."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import json
import os
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from dalle import sharding
from dalle import model_dir as checkpoint
from dalle.train import checkpointing, loop
from tests import toy_task

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loop_worker.py")


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _params(workdir):
    return sharding.to_mapping(checkpoint.load_model(os.path.join(workdir, "model"))[1])


def _assert_same_params(a, b, atol=0.0):
    """Same keys, shapes, dtypes and values (within atol): chex names the first leaf that differs."""
    chex.assert_trees_all_equal_shapes_and_dtypes(dict(a), dict(b))
    chex.assert_trees_all_close(dict(a), dict(b), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ref"))
    result = loop.train(toy_task.toy_config(), workdir, toy_task.ToyTask(toy_task.toy_config()))
    return workdir, result


def test_loss_falls_and_outputs(reference_run):
    workdir, result = reference_run
    assert result.status == "done" and result.step == 10
    losses = _losses(workdir)
    assert sorted(losses) == list(range(1, 11))
    assert np.mean([losses[9], losses[10]]) < np.mean([losses[1], losses[2]]) - 0.05
    assert "eval/loss" in open(os.path.join(workdir, "metrics.jsonl")).read()
    assert os.path.isdir(os.path.join(workdir, "tensorboard"))
    assert checkpointing.Checkpointer(workdir).latest_step() == 10
    assert set(_params(workdir))  # exported model


class _Crash(RuntimeError):
    pass


def test_crash_then_resume_continues_the_same_trajectory(reference_run, tmp_path):
    ref_dir, _ = reference_run
    cfg = toy_task.toy_config()
    task = toy_task.ToyTask(cfg)
    make_data = task.train_data

    def crashing_data(pi, pc):
        it = make_data(pi, pc)
        nxt = it.__next__

        def boom():
            if it.index == 6:  # fetching the batch of step 7 right after step 6, before step 6's checkpoint
                raise _Crash("simulated crash")
            return nxt()

        it.__next__ = boom
        return _Wrap(it)

    task.train_data = crashing_data
    with pytest.raises(_Crash):
        loop.train(cfg, str(tmp_path), task)
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == 4
    # A workdir without an exported model still loads: the params of its latest checkpoint.
    saved_config, params = checkpoint.load_model(str(tmp_path))
    assert saved_config.train.num_steps == 10 and set(sharding.to_mapping(params))
    result = loop.train(cfg, str(tmp_path), toy_task.ToyTask(cfg))
    assert result.step == 10
    ref, got = _losses(ref_dir), _losses(str(tmp_path))
    for s in range(1, 11):
        assert got[s] == ref[s], s
    _assert_same_params(_params(ref_dir), _params(str(tmp_path)))


class _Wrap(toy_task.ToyData):
    """Delegates to an instance whose __next__ was replaced (dunder lookup goes through the type)."""

    def __init__(self, inner):
        self.inner = inner

    def __next__(self):
        return self.inner.__next__()

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


def test_one_checkpoint_step_is_a_model_of_its_own(reference_run):
    """WORKDIR/checkpoints/STEP loads like a model directory, so a run can be evaluated part way through."""
    from dalle.eval import main as eval_main
    from dalle.train import reporting

    ref_dir, _ = reference_run
    last, mid = (os.path.join(ref_dir, "checkpoints", str(s)) for s in (10, 8))
    _assert_same_params(sharding.to_mapping(checkpoint.load_model(last)[1]), _params(ref_dir))
    config, params = checkpoint.load_model(mid)
    assert config.train.num_steps == 10 and checkpoint.config_of(mid).train.num_steps == 10
    mid_params, final = sharding.to_mapping(params), _params(ref_dir)
    assert set(mid_params) == set(final)
    assert any(not np.array_equal(mid_params[k], final[k]) for k in final)
    assert checkpoint.checkpoint_step(mid) == (ref_dir, 8) and checkpoint.checkpoint_step(ref_dir) is None
    assert reporting.run_summary(mid)["steps"] == 8 and reporting.run_summary(ref_dir)["steps"] == 10
    # the step the weights come from, as metrics.json records it: the checkpoint's, or the one saved with the export
    assert checkpoint.trained_step(mid) == 8 and checkpoint.trained_step(ref_dir) == 10
    assert checkpoint.trained_step(os.path.join(ref_dir, "model")) == 10
    assert eval_main.default_output_dir(mid) == os.path.join(ref_dir, "eval_step_8")
    assert eval_main.default_output_dir(ref_dir) == os.path.join(ref_dir, "eval")
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint of step 5 \(it has \[6, 8, 10\]\)"):
        checkpoint.load_latest_model(ref_dir, step=5)


def test_incompatible_resume_names_the_difference(reference_run):
    ref_dir, _ = reference_run
    cfg = toy_task.toy_config(**{"train.optimizer.lr": 1.0})
    with pytest.raises(checkpointing.ResumeError, match=r"train.optimizer.lr: 0.3 != 1.0"):
        loop.train(cfg, ref_dir, toy_task.ToyTask(cfg))


def _spawn(args, **kw):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def _wait_for(proc, needle, timeout=120):
    deadline, lines = time.time() + timeout, []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    proc.kill()
    raise AssertionError(f"{needle!r} not seen:\n" + "".join(lines[-40:]))


def test_kill9_then_resume_matches_uninterrupted(reference_run, tmp_path):
    ref_dir, _ = reference_run
    proc = _spawn([tmp_path, 10, 0.3])
    _wait_for(proc, "trained step 7")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() in (4, 6)
    done = _spawn([tmp_path, 10, 0])
    out = done.communicate(timeout=300)[0]
    assert "RESULT status=done step=10" in out, out[-3000:]
    ref, got = _losses(ref_dir), _losses(str(tmp_path))
    for s in range(1, 11):
        assert got[s] == ref[s], s
    _assert_same_params(_params(ref_dir), _params(str(tmp_path)))


def test_sigterm_checkpoints_and_stops(tmp_path):
    proc = _spawn([tmp_path, 50, 0.3])
    _wait_for(proc, "trained step 3")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 75, out[-3000:]  # preempted: a scheduler must requeue it
    line = [x for x in out.splitlines() if x.startswith("RESULT")][0]
    assert "status=preempted" in line
    step = int(line.split("step=")[1])
    assert 3 <= step < 50
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == step


@pytest.mark.parametrize("poison", ["nan_steps", "nan_grad_steps"])
def test_nonfinite_loss_or_gradient_skips_update_and_is_counted(reference_run, tmp_path, poison):
    """A NaN loss, or NaN gradients under a finite loss (which clipping does not stop), never reach the params."""
    cfg = toy_task.toy_config(**{"train.num_steps": 4, "train.checkpoint_every": 1, "train.keep_checkpoints": 5})
    result = loop.train(cfg, str(tmp_path), toy_task.ToyTask(cfg, **{poison: {2}}))
    assert result.nonfinite_steps == 1 and result.step == 4
    ck = checkpointing.Checkpointer(str(tmp_path))
    task = toy_task.ToyTask(cfg)
    abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    s2, _ = ck.restore(abstract, 2)
    s3, _ = ck.restore(abstract, 3)
    # Step index 2 (the third update) was poisoned: params after it equal params before it, and stay finite.
    _assert_same_params(sharding.to_mapping(s2["params"]), sharding.to_mapping(s3["params"]))
    assert int(s3["step"]) == 3
    assert all(np.isfinite(v).all() for v in sharding.to_mapping(s3["params"]).values())


def test_too_many_nonfinite_in_a_row_stops_with_step(tmp_path):
    cfg = toy_task.toy_config(**{"train.max_nonfinite_in_a_row": 3})
    with pytest.raises(loop.TrainingDiverged,
                       match=r"3 non-finite steps \(loss or update\) in a row, the last at step 5"):
        loop.train(cfg, str(tmp_path), toy_task.ToyTask(cfg, nan_steps={2, 3, 4}))


def test_eight_devices_equal_one_device(reference_run, tmp_path):
    ref_dir, _ = reference_run  # mesh (-1, 1, 1): 8-way data parallel
    cfg = toy_task.toy_config(**{"mesh.shape": (1, 1, 1)})
    loop.train(cfg, str(tmp_path / "one"), toy_task.ToyTask(cfg))
    cfg = toy_task.toy_config(**{"mesh.shape": (2, 2, 2)})
    loop.train(cfg, str(tmp_path / "fsdp_tp"), toy_task.ToyTask(cfg))
    one = _params(str(tmp_path / "one"))
    _assert_same_params(one, _params(ref_dir), atol=2e-5)
    _assert_same_params(one, _params(str(tmp_path / "fsdp_tp")), atol=2e-5)


def test_freeze_leaves_params_bit_identical(tmp_path):
    cfg = toy_task.toy_config(**{"train.num_steps": 3, "train.optimizer.name": "adamw"})
    task = toy_task.ToyTask(cfg, trainable=lambda path: not path.startswith("head"))
    loop.train(cfg, str(tmp_path), task)
    abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0))
    ck = checkpointing.Checkpointer(str(tmp_path))
    init = sharding.to_mapping(ck.restore(abstract, 2)[0]["params"])  # keep_checkpoints=3: steps 2 and 3 kept
    final = _params(str(tmp_path))
    for k, v in final.items():
        if k.startswith("head"):
            assert np.array_equal(v, init[k]), k
    assert any(not np.array_equal(v, init[k]) for k, v in final.items() if not k.startswith("head"))
    opt_leaves = sharding.to_mapping(ck.restore(abstract, 3)[0]["opt_state"])
    assert not any("head" in k for k in opt_leaves), "frozen params must keep no optimizer state"


def test_dry_run_reports_memory():
    cfg = toy_task.toy_config(**{"mesh.shape": (4, 1, 2)})
    report = loop.dry_run(cfg, toy_task.ToyTask(cfg))
    assert report["devices"] == 8 and report["params"] > 10_000
    assert report["per_device_peak_bytes"] > 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(reference_run, tmp_path):
    ref_dir, _ = reference_run
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path), "10", "0", "multi", str(i), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0 and "status=done step=10" in o, o[-3000:]
    _assert_same_params(_params(ref_dir), _params(str(tmp_path)), atol=2e-5)


def _spawn_pair(tmp_path, num_steps, slow, extra_env=None):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(extra_env or {})
    return [subprocess.Popen([sys.executable, WORKER, str(tmp_path), str(num_steps), str(slow), "multi", str(i),
                              str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            for i in range(2)]


def test_sigterm_to_one_host_stops_both_at_the_same_step(tmp_path):
    """Each host gets its own signal; the loop agrees on the stop, so both save the same step and exit 75."""
    procs = _spawn_pair(tmp_path, 50, 0.3)
    _wait_for(procs[0], "trained step 3")  # the slowed step's callback runs on process 0's device
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    steps = []
    for p, o in zip(procs, outs):
        assert p.returncode == 75, o[-3000:]
        [line] = [x for x in o.splitlines() if x.startswith("RESULT")]
        assert "status=preempted" in line, line
        steps.append(int(line.split("step=")[1]))
    assert steps[0] == steps[1] and 3 <= steps[0] < 50
    assert checkpointing.Checkpointer(str(tmp_path)).latest_step() == steps[0]


def test_a_dead_host_fails_the_other_within_the_heartbeat_timeout(tmp_path):
    procs = _spawn_pair(tmp_path, 200, 0.3, {"DALLE_HEARTBEAT_TIMEOUT_S": "5"})
    _wait_for(procs[0], "trained step 3")
    procs[1].kill()
    start = time.time()
    try:
        out = procs[0].communicate(timeout=90)[0]
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode != 0, out[-3000:]
    assert time.time() - start < 60, "the survivor must fail in bounded time, not wait for jax's 100 s default"
