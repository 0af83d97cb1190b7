"""tools/eval_report.py --experiments: one row per run, and a mean row over the seeds of a recipe."""

import json

import pytest

from tools import eval_report


def _metrics(workdir, val, val_first, zs, temperature=0.7, steps=1500):
    (workdir / "metrics.jsonl").write_text(
        json.dumps({"step": 50, "time": 0.0, "train/loss": 2.0, "train/steps_per_s": 2.0}) + "\n"
        + json.dumps({"step": steps, "time": 600.0, "train/loss": 0.2, "train/steps_per_s": (steps - 50) / 600.0}) + "\n")

    def comp(a, first):
        return {"all": a, "stderr": 0.01, "images": 200, "first_sample": {"all": first, "stderr": 0.02}}

    return {"checkpoint": str(workdir), "prompts": {"splits": ["validation", "zero_shot"]},
            "sampling": {"temperature": temperature}, "sampling_written": {"guidance": 1.5},
            "scales": {"1": {"splits": {}},
                       "1.5": {"splits": {"validation": {"compositional": comp(val, val_first)},
                                          "zero_shot": {"compositional": comp(zs, zs)}}}}}


def test_experiments_table_rows_and_seed_mean(tmp_path):
    runs = []
    for seed, (val, first) in enumerate(((0.9, 0.8), (0.7, 0.6))):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        runs.append((f"baseline (seed {seed})", _metrics(d, val, first, 0.1)))
    d = tmp_path / "t"
    d.mkdir()
    runs.append(("temperature 0.3", _metrics(d, 0.95, 0.9, 0.0, temperature=0.3)))
    text = eval_report.render_experiments(runs, "cmd", "what it shows")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| run | steps | training minutes | guidance | temperature | validation | zero_shot |"
    seed0 = next(r for r in rows if r.startswith("| baseline (seed 0)"))
    # 10 minutes logged plus the first 50 steps at 2 steps/s; guidance is the exported one (1.5)
    assert "| 1500 | 10.4 | 1.5 | 0.7 |" in seed0 and "80.0" in seed0 and "90.0" in seed0
    assert any(r.startswith("| temperature 0.3") and "| 0.3 |" in r for r in rows)
    mean = next(r for r in rows if "mean of 2 seeds" in r)
    assert "70.0% (±10.0) / 80.0% (±10.0)" in mean  # first sample / CLIP-best on validation
    assert "what it shows" in text
    assert text.startswith("## Composition experiments on the one-object shapes world\n")
    titled = eval_report.render_experiments(runs[:1], "cmd", title="VQGAN vs dVAE codes")
    assert titled.startswith("## VQGAN vs dVAE codes\n")


def test_by_kind_table_has_a_column_per_run_and_a_row_per_split_kind(tmp_path):
    runs = []
    for i, two in enumerate((0.25, 0.5)):
        d = tmp_path / f"r{i}"
        d.mkdir()
        m = _metrics(d, 0.6, 0.5, 0.1)
        val = m["scales"]["1.5"]["splits"]["validation"]["compositional"]
        val["by_kind"] = {"objects:2": {"all": two, "images": 80}, "objects:1": {"all": 0.9, "images": 60}}
        val["first_sample"]["by_kind"] = {"objects:2": {"all": two / 2, "images": 80}}
        zs = m["scales"]["1.5"]["splits"]["zero_shot"]["compositional"]
        zs["by_kind"] = {"held_out:red star": {"all": 0.05 * i, "images": 40}}
        runs.append((f"run {i}", m))
    text = eval_report.render_experiments(runs, "cmd", by_kind=True)
    assert "| split: prompt asks | run 0 | run 1 |" in text
    rows = [r for r in text.splitlines() if r.startswith("| validation: ") or r.startswith("| zero_shot: ")]
    # objects:1 before objects:2, validation before zero_shot; a kind without first-sample numbers says so
    assert rows == ["| validation: objects:1 | n/a / 90% (60) | n/a / 90% (60) |",
                    "| validation: objects:2 | 12% / 25% (80) | 25% / 50% (80) |",
                    "| zero_shot: held_out:red star | n/a / 0% (40) | n/a / 5% (40) |"]
    assert "split: prompt asks" not in eval_report.render_experiments(runs, "cmd")


def test_a_checkpoint_step_is_a_row_at_its_step_and_best_scale(tmp_path):
    """A run evaluated part way through (WORKDIR/checkpoints/STEP) reports the steps and minutes up to that step,
    at its best measured scale (it has no export that a scale was written into)."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    m = _metrics(workdir, 0.5, 0.4, 0.0, steps=1500)
    m["checkpoint"] = str(workdir / "checkpoints" / "800")
    m["sampling_written"] = {"written": False, "why": "no exported model"}
    m["scales"]["1"]["splits"] = {"validation": {"compositional": {"all": 0.3, "stderr": 0.01}},
                                  "zero_shot": {"compositional": {"all": 0.0, "stderr": 0.0}}}
    (workdir / "metrics.jsonl").write_text("".join(
        json.dumps({"step": step, "train/loss": 1.0, "train/steps_per_s": rate}) + "\n"
        for step, rate in ((50, 2.0), (800, 2.5), (1500, 1.0))))
    row = next(r for r in eval_report.render_experiments([("step 800", m)], "cmd").splitlines()
               if r.startswith("| step 800"))
    # 50 steps at 2 steps/s, then 750 at 2.5 (the rows after step 800 do not count); the better of scales 1, 1.5
    assert "| 800 | 5.4 | 1.5 |" in row and "40.0% ± 2.0 / 50.0% ± 1.0" in row


def test_write_section_replaces_only_its_own_section(tmp_path):
    target = tmp_path / "EVAL.md"
    target.write_text(eval_report.HEADER)
    eval_report.write_section("a", "## A v1\n", str(target))
    eval_report.write_section("b", "## B\n", str(target))
    eval_report.write_section("a", "## A v2\n", str(target))
    text = target.read_text()
    assert text.startswith(eval_report.HEADER) and "A v1" not in text
    assert text.index("## A v2") < text.index("## B")


def test_completion_table_rows():
    entry = {"keep_rows": 2, "code_rows": 8, "scale": 2.0,
             "splits": {"validation": {"prompts": 40, "kept": [0.9, 0.05], "caption": [0.25, 0.07],
                                       "both": [0.2, 0.06], "caption_without_image": [0.3, 0.07]}}}
    lines = eval_report.completion_table(entry)
    assert lines[0] == "### Image completion (guidance 2, first sample)"
    assert "top 2 of 8 code rows kept" in lines[2]
    assert "| validation | 40 | 90.0% ± 5.0 | 25.0% ± 7.0 | 20.0% ± 6.0 | 30.0% ± 7.0 |" in lines
    assert eval_report.completion_table({"keep_rows": 2, "code_rows": 8, "scale": 1.0, "splits": {},
                                         "why": "one-object world"}) == []


def test_comparison_table_rows():
    report = {"prompts": {"splits": ["validation", "zero_shot"], "per_split": 50}, "clip_checkpoint": "c",
              "methods": [{"name": "autoregressive", "guidance": 1.5, "clip_score": 28.123, "clip_self_scored": False,
                           "fid": 3.5, "fid_metric": "FID-CLIP", "seconds_per_image": 0.0412,
                           "training_minutes": 14.97,
                           "splits": {"validation": {"all": 0.9, "stderr": 0.04}, "zero_shot": {"all": 0.02,
                                                                                                "stderr": 0.02}}},
                          {"name": "CLIP-guided", "guidance": 1.0, "clip_score": 31.0, "clip_self_scored": True,
                           "fid": None, "fid_metric": None, "seconds_per_image": 5.9, "training_minutes": None,
                           "splits": {"validation": {"all": None}}}]}
    text = eval_report.render_comparison(report, "x/compare.json")
    assert "| autoregressive | 1.5 | 90.0% ± 4.0 | 2.0% ± 2.0 | 28.12 | 3.50 FID-CLIP | 0.041 | 15.0 |" in text
    assert "| CLIP-guided | 1 | n/a | n/a | 31.00* | n/a | 5.900 | none |" in text


def test_the_shapes_section_names_the_eval_variant_that_ran():
    shown = eval_report._eval_config_shown
    assert shown({"config": {"name": "eval_shapes_multi"}}) == "configs/eval/shapes.py:multi"
    assert shown({"config": {"name": "eval_shapes_full"}}) == "configs/eval/shapes.py"
    assert shown({}) == "configs/eval/shapes.py"  # a metrics.json from before the config was saved


def test_a_run_is_shown_at_the_guidance_given_with_its_path(tmp_path):
    m = _metrics(tmp_path, 0.8, 0.7, 0.1)
    m["scales"]["2"] = {"splits": {"validation": {"compositional": {"all": 0.9, "stderr": 0.01, "images": 200}}}}
    m["sampling_written"] = {"written": False, "why": "eval.write_sampling is false"}
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(m))
    assert eval_report._shown_scale(m) == "1"  # nothing written: the first scale, whatever measured best
    label, shown = eval_report.read_run(f"run a={path}@1.5")
    assert label == "run a" and eval_report._shown_scale(shown) == "1.5"
    assert eval_report._shown_scale(eval_report.read_run(f"b={path}@2.0")[1]) == "2"
    with pytest.raises(ValueError, match="guidance 3 was not measured"):
        eval_report.read_run(f"c={path}@3")
    written = dict(m, sampling_written={"guidance": 1.5, "written": True})
    assert eval_report._shown_scale(written) == "1.5"  # a written guidance wins over the first scale
