"""dalle.paths: one path layer, so `gs://` workdirs reach the bucket. A fake bucket (etils' own epath mock, TensorFlow's
gfile backend switched off by EPATH_USE_TF=false) maps gs://bucket/... to a local folder; the code under test sees
only gs:// paths, exactly as on a pod. Orbax's array data goes through tensorstore, which has no offline GCS: those
writes are the one part not exercised here."""

from __future__ import annotations

import json
import os

import pytest
from etils import epath
from ml_collections import ConfigDict

from dalle import model_dir, paths
from dalle.train import checkpointing, loop, reporting

BUCKET = "gs://bucket"  # what the fake_bucket fixture (tests/conftest.py) maps to a local folder

# epath decides once per process whether TensorFlow serves gs:// (yes: it is installed) and caches the answer; make
# that happen before any fixture runs, as orbax and earlier tests do in a full run, so every test here would reach
# the real gs:// backend if the fixture did not override the cached choice.
epath.Path(os.getcwd()).exists()


def test_remote_paths_are_never_made_local():
    assert paths.is_remote("gs://b/run") and not paths.is_remote("outputs/run")
    assert paths.absolute("gs://b/run") == "gs://b/run"
    assert paths.absolute("outputs/run") == os.path.abspath("outputs/run")
    assert paths.join("gs://b/run", "model", "config.json") == "gs://b/run/model/config.json"
    assert paths.join("outputs/run", "model") == os.path.join("outputs/run", "model")


def test_files_and_directories_in_the_bucket(fake_bucket):
    bucket = fake_bucket
    paths.makedirs(f"{BUCKET}/run/data_state")
    paths.write_text_atomic(f"{BUCKET}/run/a.json", '{"x": 1}')
    paths.write_text_atomic(f"{BUCKET}/run/a.json", '{"x": 2}')  # over an existing file
    assert json.loads((bucket / "run" / "a.json").read_text()) == {"x": 2}
    assert sorted(os.listdir(bucket / "run")) == ["a.json", "data_state"]  # no temporary file left
    assert paths.isfile(f"{BUCKET}/run/a.json") and paths.isdir(f"{BUCKET}/run/data_state")
    assert paths.glob(f"{BUCKET}/run", "*.json") == [f"{BUCKET}/run/a.json"]
    paths.replace(f"{BUCKET}/run/data_state", f"{BUCKET}/run/moved")
    assert paths.isdir(f"{BUCKET}/run/moved") and not paths.exists(f"{BUCKET}/run/data_state")
    paths.rmtree(f"{BUCKET}/run/moved")
    paths.rmtree(f"{BUCKET}/run/moved")  # already gone: not an error
    paths.remove(f"{BUCKET}/run/a.json")
    assert os.listdir(bucket / "run") == []
    with paths.open_file(f"{BUCKET}/run/log.jsonl", "a") as f:
        f.write("one\n")
    with paths.open_file(f"{BUCKET}/run/log.jsonl", "a") as f:
        f.write("two\n")
    assert paths.read_text(f"{BUCKET}/run/log.jsonl") == "one\ntwo\n"


def test_training_workdir_files_in_the_bucket(fake_bucket):
    bucket = fake_bucket
    workdir = f"{BUCKET}/runs/r1"
    config = ConfigDict({"name": "t", "seed": 0, "train": {"num_steps": 10}})
    checkpointing.check_or_write_config(workdir, config)
    assert json.loads((bucket / "runs" / "r1" / "config.json").read_text())["seed"] == 0
    changed = ConfigDict({"name": "t", "seed": 1, "train": {"num_steps": 10}})
    with pytest.raises(checkpointing.ResumeError, match="seed"):
        checkpointing.check_or_write_config(workdir, changed)

    for step in (1, 2, 3):
        loop._save_data_state(workdir, step, {"position": step}, keep_steps={2})
    assert sorted(os.listdir(bucket / "runs" / "r1" / "data_state")) == [
        "step_000000002.process_0.json", "step_000000003.process_0.json"]
    assert loop._load_data_state(workdir, 3) == {"position": 3}
    assert loop._load_data_state(workdir, 1) is None

    rows = [{"step": 5, "train/loss": 2.0, "train/steps_per_s": 1.0},
            {"step": 10, "train/loss": 1.0, "train/steps_per_s": 0.5}]
    (bucket / "runs" / "r1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reporting.run_summary(workdir) == {"steps": 10, "minutes": pytest.approx(15 / 60), "last": 1.0}
    assert model_dir.config_of(workdir).seed == 0


def test_model_directory_in_the_bucket(fake_bucket):
    bucket = fake_bucket
    directory = f"{BUCKET}/models/m"
    (bucket / "models" / "m" / "params").mkdir(parents=True)
    (bucket / "models" / "m" / "config.json").write_text(json.dumps(
        {"config": {"model": {"kind": "vqgan", "channels": [1, 2]}, "data": {"tokenizer_path": "tok/spm.model"}}}))
    (bucket / "models" / "tok").mkdir()
    (bucket / "models" / "tok" / "spm.model").write_text("x")
    assert model_dir.exported_model_dir(directory) == directory
    assert model_dir.exported_model_dir(f"{BUCKET}/models") is None
    assert model_dir.read_config(directory).model.channels == (1, 2)
    model_dir.set_config_section(directory, "sampling", {"temperature": 0.3}, extra={"note": "swept"})
    assert model_dir.read_config(directory).sampling.temperature == 0.3
    assert model_dir.read_extra(directory) == {"note": "swept"}
    # A relative path stored in the config is found in the folders above the model, as for local models.
    assert model_dir.resolve_path(directory, "tok/spm.model") == f"{BUCKET}/models/tok/spm.model"
    assert model_dir.resolve_path(directory, "missing/x") == "missing/x"
    with pytest.raises(model_dir.CheckpointError, match="config.json is missing"):
        model_dir.read_config(f"{BUCKET}/models/none")


def test_images_written_into_the_bucket(fake_bucket):
    bucket = fake_bucket
    import numpy as np
    from PIL import Image

    from dalle.generation import save_png

    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    save_png(f"{BUCKET}/eval/grids/a.png", image, scale=2)  # the folder is created
    with Image.open(bucket / "eval" / "grids" / "a.png") as img:
        assert np.array_equal(np.asarray(img)[::2, ::2], image)


def test_encoded_dataset_metadata_in_the_bucket(fake_bucket):
    from dalle.data import encode

    out = f"{BUCKET}/encoded"
    paths.makedirs(out)
    encode._check_existing(out, "hash-a")  # claims the directory for this tokenizer
    assert json.loads((fake_bucket / "encoded" / encode.ENCODER_FILE).read_text()) == {"vqgan_config_hash": "hash-a"}
    with pytest.raises(ValueError, match="hash-a"):
        encode._check_existing(out, "hash-b")
    with pytest.raises(FileNotFoundError, match="info.json is missing"):
        encode.read_info(out)
    shard = encode.shard_path(out, "train", 0, 1, "tfrecord")
    assert shard == f"{BUCKET}/encoded/train/train-00000-of-00001.tfrecord"
    assert encode.sidecar_path(shard) == f"{BUCKET}/encoded/train/train-00000-of-00001.json"


def test_the_fake_bucket_holds_after_epath_chose_a_backend(tmp_path, fake_bucket):
    """epath caches whether TensorFlow serves gs:// on first use; the fixture must win even after that."""
    assert epath.Path(str(tmp_path)).exists()  # local use, as orbax and earlier tests make
    paths.write_text_atomic(f"{BUCKET}/x.txt", "in the fake bucket")
    assert (fake_bucket / "x.txt").read_text() == "in the fake bucket"


def test_training_log_rows_in_the_bucket(fake_bucket):
    r = reporting.Reporter(f"{BUCKET}/run", total_steps=2, start_step=0, progress_bar=False)
    r._writer = _NoWriter()  # TensorBoard writes through TensorFlow's own filesystem, outside the fake bucket
    r.scalars(1, {"loss": 2.0}, prefix="train/")
    r.scalars(2, {"loss": 1.0}, prefix="train/")
    r.close()
    rows = [json.loads(line) for line in (fake_bucket / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["train/loss"]) for row in rows] == [(1, 2.0), (2, 1.0)]


class _NoWriter:
    def write_scalars(self, step, values):
        pass

    def flush(self):
        pass

    def close(self):
        pass


def test_an_interrupted_write_leaves_no_temporary_file(fake_bucket, monkeypatch):
    def fail(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(type(epath.Path(f"{BUCKET}/a")), "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        paths.write_text_atomic(f"{BUCKET}/a.json", "{}")
    assert os.listdir(fake_bucket) == []
