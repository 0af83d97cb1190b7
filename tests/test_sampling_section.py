"""The `sampling` config section: its checks, the one merge of a model's section with overrides, the atomic
rewrite of a model directory's section, and the eval sweep's choice of the best guidance written into it."""

from __future__ import annotations

import json
import os

import pytest
from etils import epath
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import model_dir, sampling_schema
from dalle.eval import main as eval_main

MODEL = {"kind": "decoder_only", "image_vocab_size": 512}


def test_schema_defaults_and_section_checks_name_the_key():
    cfg = config_lib.load_config("configs/shapes_tiny.py")
    shapes_tiny = config_lib._import_file("configs/shapes_tiny.py")
    assert cfg.sampling.to_dict() == dict(guidance=1.5, temperature=0.3, top_k=8, top_p=1.0, candidates=4, keep=1,
                                          clip_checkpoint="outputs/demo/clip/model",
                                          examples=shapes_tiny.EXAMPLE_PROMPTS)
    filled = config_lib.validate(ConfigDict({"sampling": {"guidance": 2}}))
    assert filled.sampling.guidance == 2.0 and filled.sampling.candidates == 8 and filled.sampling.keep == 0
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.load_config("configs/shapes_tiny.py", [
            "--config.sampling.top_p=0", "--config.sampling.keep=5", "--config.sampling.top_k=513",
            "--config.sampling.temperature=-1"])
    for needle in ("sampling.top_p = 0.0 must be in (0, 1]", "sampling.keep = 5 must be between 0 (keep all) and "
                   "sampling.candidates = 4", "sampling.top_k = 513 must be between 0 (off) and the model's 512",
                   "sampling.temperature = -1.0"):
        assert needle in str(e.value)
    with pytest.raises(config_lib.ConfigError, match="unknown key 'sampling.cfg_scale'"):
        config_lib.validate(ConfigDict({"sampling": {"cfg_scale": 2.0}}))


def test_resolve_merges_the_model_section_with_overrides():
    old = ConfigDict({"model": MODEL})  # a model directory exported before the section: schema defaults
    assert sampling_schema.resolve(old) == sampling_schema.resolve(None)
    assert sampling_schema.resolve(old).to_dict() == sampling_schema.sampling_defaults().to_dict()
    model = ConfigDict({"model": MODEL, "sampling": {"guidance": 2, "top_k": 8, "candidates": 4, "keep": 1}})
    s = sampling_schema.resolve(model, {"guidance": None, "temperature": 0.5, "keep": 2})
    assert (s.guidance, s.temperature, s.top_k, s.candidates, s.keep, s.kept) == (2.0, 0.5, 8, 4, 2, 2)
    assert isinstance(s.guidance, float)
    assert s.sampler_kwargs() == {"condition_scale": 2.0, "temperature": 0.5, "top_k": 8, "top_p": 1.0}
    assert sampling_schema.resolve(model, {"keep": 0}).kept == 4
    # Errors say where the bad value came from: a flag (labels), the model's section, or the schema.
    with pytest.raises(sampling_schema.SamplingError, match="--top = 5 must be between 0 .* the model's "
                                                             "sampling.candidates = 4"):
        sampling_schema.resolve(model, {"keep": 5}, {"keep": "--top"})
    with pytest.raises(sampling_schema.SamplingError, match="the model's sampling.top_k = 600 .* 512 image codes"):
        sampling_schema.resolve(ConfigDict({"model": MODEL, "sampling": {"top_k": 600}}))
    with pytest.raises(sampling_schema.SamplingError, match="--n = 'many' is not a whole number"):
        sampling_schema.resolve(None, {"candidates": "many"}, {"candidates": "--n"})
    with pytest.raises(sampling_schema.SamplingError, match="unknown key in the model's sampling section: 'cfg'"):
        sampling_schema.resolve({"sampling": {"cfg": 1}})
    with pytest.raises(KeyError):
        sampling_schema.resolve(None, {"guidance_scale": 1.0})


def test_with_section_completes_what_an_export_saves():
    cfg = ConfigDict({"model": MODEL, "sampling": {"guidance": 1.5}})
    out = sampling_schema.with_section(cfg)
    assert out.sampling.guidance == 1.5 and out.sampling.candidates == 8 and out.model.kind == "decoder_only"
    assert "candidates" not in cfg.sampling  # the trainer's config is left as it was
    assert sampling_schema.with_section(ConfigDict({"model": MODEL})).sampling.to_dict() == \
        sampling_schema.sampling_defaults().to_dict()


def test_rerank_clip_skips_a_missing_model_clip_with_a_warning(tmp_path):
    s = sampling_schema.resolve(None, {"clip_checkpoint": str(tmp_path / "gone")})
    with pytest.warns(UserWarning, match="does not exist: candidates are not reranked"):
        assert sampling_schema.rerank_clip(s, from_user=False) == ""
    assert sampling_schema.rerank_clip(s, from_user=True) == str(tmp_path / "gone")  # the loader will say why
    assert sampling_schema.rerank_clip(sampling_schema.resolve(None, {"clip_checkpoint": str(tmp_path)}),
                                       from_user=False) == str(tmp_path)


def _fake_workdir(root) -> str:
    """A trainer workdir whose exported model/ holds a config (no params needed to rewrite the config)."""
    os.makedirs(root / "model" / "params")
    with open(root / "model" / "config.json", "w") as f:
        json.dump({"config": {"model": MODEL, "sampling": {"guidance": 3.0}}, "note": "kept"}, f)
    return str(root)


def test_set_config_section_is_atomic_and_keeps_the_rest(tmp_path, monkeypatch):
    work = _fake_workdir(tmp_path)
    target = model_dir.exported_model_dir(work)
    assert target == os.path.join(work, "model") and model_dir.exported_model_dir(target) == target
    assert model_dir.exported_model_dir(str(tmp_path / "model" / "params")) is None
    model_dir.set_config_section(target, "sampling", {"guidance": 1.5}, extra={"sampling_measured": {"x": 1}})
    assert model_dir.read_config(target).sampling.to_dict() == {"guidance": 1.5}
    assert model_dir.read_config(target).model.kind == "decoder_only"
    assert model_dir.read_extra(target) == {"note": "kept", "sampling_measured": {"x": 1}}
    assert sorted(os.listdir(target)) == ["config.json", "params"]  # no temporary file left behind

    path_cls = type(epath.Path(target))
    write_text = path_cls.write_text

    def half_then_crash(self, text, *a, **k):  # the disk fills up half way through the new file
        write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    before = open(os.path.join(target, "config.json")).read()
    monkeypatch.setattr(path_cls, "write_text", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        model_dir.set_config_section(target, "sampling", {"guidance": 9.0})
    assert open(os.path.join(target, "config.json")).read() == before  # a failed write leaves the old file
    assert sorted(os.listdir(target)) == ["config.json", "params"]  # and no half-written temporary one


def _entry(validation=None, train=None, clip=None) -> dict:
    splits = {}
    if validation is not None:
        splits["validation"] = {"compositional": {"all": validation}}
    if train is not None:
        splits["train"] = {"compositional": {"all": train}}
    return {"splits": splits, "clip_score": {"clip_score": clip}}


def test_best_scale_is_the_headline_accuracy():
    # EVAL.md's sweep of the demo model: 85.9 / 92.2 / 84.4 / 29.7 % of validation prompts fully correct.
    eval_md = {"scales": {"1": _entry(0.859, 0.844, 74.2), "1.5": _entry(0.922, 0.859, 74.9),
                          "2": _entry(0.844, 0.859, 73.2), "3": _entry(0.297, 0.422, 61.7)}}
    assert eval_main.best_scale(eval_md) == (1.5, "validation fully correct", 0.922)
    no_validation = {"scales": {"1": _entry(train=0.5), "3": _entry(train=0.75)}}
    assert eval_main.best_scale(no_validation) == (3.0, "fully correct (mean of the splits)", 0.75)
    prompts_file = {"scales": {"1": _entry(clip=30.0), "3": _entry(clip=31.5), "10": _entry(clip=29.0)}}
    assert eval_main.best_scale(prompts_file) == (3.0, "CLIP score", 31.5)
    tie = {"scales": {"2": _entry(0.5), "1": _entry(0.5)}}
    assert eval_main.best_scale(tie)[0] == 2.0  # the scale measured first
    assert eval_main.best_scale({"scales": {"1": _entry(), "2": _entry(float("nan"))}}) is None


def _metrics(settings: bool = True) -> dict:
    sampling = {"num_candidates": 4, "keep_top": 1, "top_k": 8, "top_p": 1.0, "temperature": 0.7, "seed": 0,
                "reranked_by": "clip_shapes_one_object"}
    if settings:
        sampling["settings"] = {"candidates": 4, "keep": 1, "top_k": 8, "top_p": 1.0, "temperature": 0.7,
                                "clip_checkpoint": "outputs/demo/clip/model"}
    return {"scales": {"1": _entry(0.859), "1.5": _entry(0.922), "3": _entry(0.297)}, "sampling": sampling,
            "config": {"eval": {"clip_checkpoint": "outputs/demo/clip/model"}}}


@pytest.mark.parametrize("settings", [True, False])  # False: a metrics.json from before the sampling section
def test_eval_writes_the_best_measured_settings_into_the_model(tmp_path, settings):
    work = _fake_workdir(tmp_path)
    written = eval_main.write_best_sampling(_metrics(settings), work)
    assert written["written"] and written["guidance"] == 1.5 and written["by_scale"]["3"] == 0.297
    target = os.path.join(work, "model")
    section = model_dir.read_config(target).sampling.to_dict()
    assert not section.pop("examples")  # the fake model has no example prompts; they are kept as they were
    assert section == dict(guidance=1.5, temperature=0.7, top_k=8, top_p=1.0, candidates=4, keep=1,
                           clip_checkpoint="outputs/demo/clip/model")
    assert sampling_schema.resolve(model_dir.read_config(target)).guidance == 1.5  # what generate/serve now use
    assert model_dir.read_extra(target)["sampling_measured"]["headline"] == "validation fully correct"
    not_exported = eval_main.write_best_sampling(_metrics(), str(tmp_path / "model" / "params"))
    assert not not_exported["written"] and "no exported model" in not_exported["why"]


def test_demo_stage_writes_once_from_the_eval_metrics(tmp_path, capsys):
    from dalle import demo

    work = _fake_workdir(tmp_path)
    demo.write_measured_sampling(work)  # no metrics.json yet: nothing to write
    assert model_dir.read_config(os.path.join(work, "model")).sampling.guidance == 3.0
    os.makedirs(tmp_path / "eval")
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(_metrics(settings=False)))
    demo.write_measured_sampling(work)
    assert model_dir.read_config(os.path.join(work, "model")).sampling.guidance == 1.5
    model_dir.set_config_section(os.path.join(work, "model"), "sampling", {"guidance": 2.0})  # edited by hand
    demo.write_measured_sampling(work)
    assert model_dir.read_config(os.path.join(work, "model")).sampling.guidance == 2.0  # measured once: kept
    assert "already holds the measured settings" in capsys.readouterr().out
