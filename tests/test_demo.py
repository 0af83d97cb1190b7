"""`dalle demo` end to end on a tiny world with second-long training budgets: every stage runs, its outputs
appear, and a second run skips every finished stage."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import json
import os

import pytest

from dalle import cli

pytestmark = pytest.mark.slow  # ~3 minutes: compiles four models; CI's `make test-all` and the demo itself cover it


def test_demo_pipeline(tmp_path, capsys):
    root = str(tmp_path / "demo")
    small = ["--config.data.train_size=256", "--config.data.validation_size=64", "--config.data.zero_shot_size=32",
             "--config.train.batch_size=16", "--config.train.eval_every=0"]
    argv = ["demo", "--root", root, "--vqgan_minutes", "0.02", "--dalle_minutes", "0.02", "--clip_minutes", "0.02",
            "--eval_config", "configs/eval/shapes.py:quick", *small]
    assert cli.main(argv) == 0
    for path in ("vqgan/model/config.json", "tokenizer/spm.model", "encoded/info.json", "dalle/model/config.json",
                 "clip/model/config.json", "dalle/eval/metrics.json", "samples/grid.png"):
        assert os.path.exists(os.path.join(root, path)), path
    metrics = json.load(open(os.path.join(root, "dalle/eval/metrics.json")))
    assert metrics
    # The eval stage wrote its best guidance (and the settings it sampled with) into the exported model.
    from dalle import model_dir

    sampling = model_dir.read_config(os.path.join(root, "dalle", "model")).sampling
    assert sampling.guidance in (1.0, 3.0) and sampling.candidates == 2 and sampling.keep == 1
    assert sampling.clip_checkpoint == os.path.join(root, "clip", "model")
    assert model_dir.read_extra(os.path.join(root, "dalle", "model"))["sampling_measured"]["by"] == "dalle eval"
    capsys.readouterr()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 7
