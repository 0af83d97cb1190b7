"""dalle/train/reporting.py's run_summary: steps, minutes and the last value of a metric from metrics.jsonl."""

import json

from dalle.train import reporting


def test_run_summary_reads_steps_minutes_and_last_value(tmp_path):
    rows = [{"step": 50, "time": 1000.0, "train/loss": 3.0, "train/steps_per_s": 2.0},
            {"step": 60, "time": 1010.0, "eval/loss": 2.5},
            {"step": 100, "time": 1030.0, "train/loss": 1.5, "train/steps_per_s": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = reporting.run_summary(str(tmp_path))
    assert run["steps"] == 100 and run["last"] == 1.5
    assert abs(run["minutes"] - (30 + 50 / 2.0) / 60) < 1e-9  # 30 s logged + the first 50 steps at 2 steps/s
    assert reporting.run_summary(str(tmp_path), "eval/loss")["last"] == 2.5
    assert reporting.run_summary(str(tmp_path), "train/psnr") == {"steps": None, "minutes": None, "last": None}
    assert reporting.run_summary(str(tmp_path / "missing"))["steps"] is None
