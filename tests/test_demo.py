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


def test_demo_pipeline_on_emoji(tmp_path, capsys):
    """The emoji recipe (configs/emoji_tiny.py's pipeline) end to end on fake npm packages with the real layouts
    (two emoji-datasource vendors and openmoji's SVGs), already in the demo's npm cache (no network): its stages,
    R-precision eval and sample grid."""
    from tests import data_helpers as H

    root = str(tmp_path / "emoji")
    entries = H.emoji_entries(num_plain=100, num_toned=6)  # R-precision draws 99 distractors of other emoji
    pins = [H.write_emoji_package(os.path.join(root, "npm"), v, entries) for v in ("google", "twitter")]
    pins.append(H.write_openmoji_package(os.path.join(root, "npm"), entries))
    small = [f"--config.data.emoji_packages={tuple(pins)!r}", "--config.data.emoji_zero_shot_tones=2",
             "--config.data.emoji_zero_shot_styles=2", "--config.data.validation_fraction=0.2",
             "--config.train.batch_size=16", "--config.train.eval_every=0"]
    argv = ["demo", "--config", "configs/emoji_tiny.py", "--root", root, "--vqgan_minutes", "0.02",
            "--dalle_minutes", "0.02", "--clip_minutes", "0.02", "--eval_config", "configs/eval/emoji.py:quick",
            *small]
    assert cli.main(argv) == 0
    for path in ("vqgan/model/config.json", "tokenizer/spm.model", "encoded/info.json", "dalle/model/config.json",
                 "clip/model/config.json", "dalle/eval/metrics.json", "samples/grid.png"):
        assert os.path.exists(os.path.join(root, path)), path
    metrics = json.load(open(os.path.join(root, "dalle/eval/metrics.json")))
    assert metrics["ceilings"]["r_precision"]["validation"]["real"]["count"] > 0
    assert "r_precision" in metrics["scales"]["1"]["splits"]["zero_shot"]
    prompts = json.load(open(os.path.join(root, "samples", "prompts.json")))["prompts"]
    assert prompts[0] == "grinning face, google style"  # the recipe's sampling.examples
    assert "dalle generate \"grinning face, google style\"" in capsys.readouterr().out
