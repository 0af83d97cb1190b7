"""dalle/train/reporting.py's run_summary: steps, minutes and the last value of a metric from metrics.jsonl."""

import json

from dalle.train import reporting


def test_run_summary_reads_steps_minutes_and_last_value(tmp_path):
    rows = [{"step": 50, "time": 1000.0, "train/loss": 3.0, "train/steps_per_s": 2.0},
            {"step": 60, "time": 1010.0, "eval/loss": 2.5},
            {"step": 100, "time": 1030.0, "train/loss": 1.5, "train/steps_per_s": 50 / 30}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = reporting.run_summary(str(tmp_path))
    assert run["steps"] == 100 and run["last"] == 1.5
    assert abs(run["minutes"] - (50 / 2.0 + 30) / 60) < 1e-9  # the first 50 steps at 2 steps/s + 30 s logged
    assert reporting.run_summary(str(tmp_path), "eval/loss")["last"] == 2.5
    assert reporting.run_summary(str(tmp_path), "train/psnr") == {"steps": None, "minutes": None, "last": None}
    assert reporting.run_summary(str(tmp_path / "missing"))["steps"] is None


def test_a_resumed_run_counts_its_training_windows_not_the_pause(tmp_path):
    rows = [{"step": 100, "time": 0.0, "train/loss": 2.0, "train/steps_per_s": 2.0},
            {"step": 200, "time": 50.0, "train/loss": 1.0, "train/steps_per_s": 2.0},
            # stopped at step 200, resumed an hour later
            {"step": 300, "time": 3650.0, "train/loss": 0.5, "train/steps_per_s": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = reporting.run_summary(str(tmp_path))
    assert run["steps"] == 300 and abs(run["minutes"] - (50 + 50 + 100) / 60) < 1e-9
