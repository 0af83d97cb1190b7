"""The benchmark plumbing: the worker protocol and interleaving, the config mapping to dalle-mini, the matmul peak,
and (slow) every `--quick` benchmark end to end producing a well-formed table."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from benchmarks import peers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_WORKER = [sys.executable, "-c", (
    "import time\n"
    "from benchmarks import peers\n"
    "def setup(req):\n"
    "    if req.get('fail'): raise ValueError('asked to fail')\n"
    "    return (lambda: time.sleep(req['sleep'])), {'compile_s': 0.01, 'who': req['who']}\n"
    "peers.serve(setup)\n")]


@pytest.mark.parametrize("concurrent", [True, False])
def test_compare_interleaves_and_takes_medians(concurrent):
    log = []
    res = peers.compare((FAKE_WORKER, dict(sleep=0.01, who="ours")), (FAKE_WORKER, dict(sleep=0.03, who="peer")),
                        repeats=3, warmup=1, peer_repeats=2, concurrent=concurrent, log=log.append)
    assert len(res["ours"]["runs"]) == 3 and len(res["peer"]["runs"]) == 2
    assert res["ours"]["info"] == {"who": "ours"} and res["peer"]["info"] == {"who": "peer"}
    assert 0.01 <= res["ours"]["median"] < res["peer"]["median"]
    assert res["ours"]["compile_median"] == pytest.approx(0.01)
    timed = [line.split(":")[0].strip() for line in log if ": run " in line]
    assert timed == ["ours", "peer", "ours", "peer", "ours"]  # interleaved
    assert len(res["ours"]["compile"]) == (1 if concurrent else 3)


def test_a_slow_peer_is_stopped_and_kept_as_a_lower_bound():
    log = []
    res = peers.compare((FAKE_WORKER, dict(sleep=0.05, who="ours")), (FAKE_WORKER, dict(sleep=30.0, who="peer")),
                        repeats=2, warmup=0, peer_repeats=2, peer_limit_x=10, log=log.append)
    assert len(res["ours"]["runs"]) == 2  # ours goes on after the peer was stopped
    assert res["peer"]["runs"] == [] and res["peer"]["median"] is None
    # stopped at 10x ours' median (~0.5 s), long before its 30 s run would end
    assert 0.5 <= res["peer"]["stopped_after"] < 5
    assert sum("stopped after" in line for line in log) == 1


def test_decode_floor_counts_what_a_step_must_read():
    from benchmarks import bench_generation, decode_floor

    cfg = bench_generation.model_configs(quick=False)["mini"]
    parts = decode_floor.bytes_per_step(cfg, rows=16)
    # config/mini: 12 decoder layers of 4 d^2 self-attention + 2 d^2 cross-attention (q, out: the text's keys and
    # values are projected once per prompt) + 3 d*ffn GLU weights, plus the 16391-way head, in fp32
    assert parts["weights"] == 4 * (12 * (6 * 1024 ** 2 + 3 * 1024 * 4096) + 1024 * 16391)
    # a step at position t reads t + 1 cached positions: 129 on average over positions 1..255
    assert parts["self_cache"] == 4 * 12 * 2 * 16 * 129 * 1024
    assert parts["cross"] == 4 * 12 * 2 * 16 * 64 * 1024
    assert decode_floor.read_bandwidth(mib=8, repeats=1) > 0


def test_worker_errors_reach_the_driver():
    with pytest.raises(RuntimeError, match="asked to fail"):
        peers.compare((FAKE_WORKER, dict(sleep=0.0, who="ours", fail=True)), None, repeats=1, log=lambda _: None)


def test_dalle_mini_mapping_round_trips():
    from benchmarks import bench_generation
    from dalle.modeling import convert_dalle_mini, model as model_lib, presets

    for cfg in (presets.mini(), bench_generation.model_configs(quick=False)["shapes_tiny"]):
        kwargs = bench_generation.dalle_mini_kwargs(cfg)
        back = convert_dalle_mini.model_config_from_dalle_mini(kwargs)
        ours = model_lib.complete_config(cfg)
        for k in convert_dalle_mini._COPIED + ("image_vocab_size", "image_extra_tokens", "activation_function"):
            assert back[k] == ours[k], k
    assert bench_generation.dalle_mini_kwargs(presets.mini())["image_vocab_size"] == 16391


def test_matmul_peak_is_positive():
    from benchmarks import matmul_peak

    out = matmul_peak.measure(sizes=(64, 128), repeats=2)
    assert out["peak_gflops"] > 0 and out["at_size"] in (64, 128)


def test_precision_weight_memory_comes_from_the_model_shapes():
    from benchmarks import bench_precision

    mini = bench_precision.weight_memory("mini")
    assert mini["params"] == 538_593_280  # config/mini's 538.6 M
    assert mini["bytes"] == {"float32": 4 * mini["params"], "bfloat16": 2 * mini["params"],
                             "float16": 2 * mini["params"]}
    assert 2.5e9 < bench_precision.weight_memory("mega")["params"] < 2.7e9  # dalle-mega's ~2.6 B
    assert _check_table(bench_precision.memory_table(("mini",))) == 1


def test_precision_agreement_counts_tokens_and_first_differences():
    import numpy as np

    from benchmarks import bench_precision

    ref = np.arange(12).reshape(3, 4)
    got = ref.copy()
    got[1, 2] = -1
    got[2, 0] = got[2, 3] = -1
    a = bench_precision.agreement(ref, got)
    assert (a["matching"], a["total"], a["images_equal"], a["images"]) == (9, 12, 1, 3)
    assert a["first_diff"] == [4, 2, 0]  # 4 = the image length: no difference
    with pytest.raises(ValueError, match="cannot be compared"):
        bench_precision.agreement(ref, got[:2])


def test_precision_measure_times_every_dtype_on_the_same_prompts():
    from benchmarks import bench_precision
    from dalle.modeling import presets

    cfg = presets.micro(image_vocab_size=64)  # top-k 50 needs 50 codes
    log = []
    res = bench_precision.measure(cfg, ["float32", "bfloat16"], [2], repeats=2, decode_kernels="xla",
                                  log=log.append)
    for d in ("float32", "bfloat16"):
        t = res["timing"][(2, d)]
        assert len(t["runs"]) == 2 and t["median"] > 0 and t["compile"] > 0 and t["kernels"] == "xla"
        assert res["greedy"][d].shape == (2, cfg.image_length)
    timed = [line.split(":")[0].split()[-1] for line in log if ": run " in line]
    assert timed == ["float32", "bfloat16", "bfloat16", "float32"]  # interleaved, the order rotating


def _check_table(text: str) -> int:
    """Every markdown table in `text` has a header, a separator and rows of the same width; returns row count."""
    rows = 0
    blocks = re.findall(r"((?:^\|.*\|\n)+)", text, flags=re.M)
    assert blocks, text
    for block in blocks:
        lines = block.strip().splitlines()
        assert re.fullmatch(r"\|(---\|)+", lines[1]), lines[1]
        width = lines[0].count("|")
        assert all(line.count("|") == width for line in lines), block
        assert len(lines) >= 3, block
        rows += len(lines) - 2
    return rows


@pytest.mark.slow
def test_run_all_quick_writes_well_formed_tables(tmp_path):
    """`run_all --quick` end to end (a few minutes): needs .venv-dallemini and the torch reference."""
    if not os.path.exists(peers.DALLE_MINI_PYTHON):
        pytest.skip("the dalle-mini peer venv is missing (python -m benchmarks.peers creates it)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    r = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--quick", "--no-setup", "--out", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    expected = {"generation_mini": 2, "generation_shapes_tiny": 2, "decode_floor": 2, "train_step": 4, "vqgan_speed": 2, "generate_latency": 2,
                "precision": 4 + 1 + 2}  # timing (2 batches x 2 dtypes), greedy agreement, weight memory
    for name, n in expected.items():
        text = (tmp_path / f"{name}.md").read_text()
        assert "Command: `" in text and "Measured " in text
        assert _check_table(text) == n, name
    assert "dalle-mini" in (tmp_path / "generation_mini.md").read_text()
    assert not (tmp_path / "dry_run.md").exists()
