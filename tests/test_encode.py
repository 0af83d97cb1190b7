"""The pre-encoding job (dalle.data.encode): output, resumption, per-process shards, a real VQGAN end to end."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dalle.data import build, encode
from tests import data_helpers
from tests.data_helpers import FAKE_VQGAN_CONFIG, fake_encoder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("enc"))
    config = data_helpers.shapes_config(tmp)
    build.build_dataset(config.data)
    return config


def _with(config, **data):
    c = config.copy_and_resolve_references()
    for k, v in data.items():
        c.data[k] = v
    return c


def _read_all(encoded_dir: str, split: str) -> list[tuple[bytes, np.ndarray]]:
    info = encode.read_info(encoded_dir)
    ds = encode.dataset_from_files(encode.split_files(encoded_dir, split, info), info["format"],
                                   info["image_length"])
    return [(ex["caption"], ex["image_tokens"]) for ex in ds.as_numpy_iterator()]


def _expected(config, split: str) -> list[tuple[bytes, np.ndarray]]:
    builder = build.load_builder(config.data)
    out = []
    for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        out.append((ex["caption"], fake_encoder(ex["image"][None])[0].reshape(-1)))
    return out


@pytest.mark.parametrize("fmt", ["tfrecord", "array_record"])
def test_encode_output_matches_inputs(shapes, tmp_path, fmt):
    config = _with(shapes, encoded_dir=str(tmp_path / fmt), encoded_format=fmt)
    result = encode.run_encode(config, fake_encoder, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64,
                               process_index=0, process_count=1, progress=False)
    info = encode.read_info(str(tmp_path / fmt))
    assert info == result.info and info["complete"]
    assert info["splits"]["train"]["count"] == 48 and info["splits"]["validation"]["count"] == 12
    assert info["splits"]["train"]["num_shards"] == 3  # 48 examples / 20 per shard
    assert info["token_shape"] == [8, 8] and info["image_length"] == 64 and info["codebook_size"] == 64
    assert info["vqgan_config_hash"] == encode.config_hash(FAKE_VQGAN_CONFIG)
    assert result.encoded_images == 60 and result.images_per_second > 0
    for split in ("train", "validation"):
        got, want = _read_all(str(tmp_path / fmt), split), _expected(config, split)
        assert [c for c, _ in got] == [c for c, _ in want]
        np.testing.assert_array_equal(np.stack([t for _, t in got]), np.stack([t for _, t in want]))
        assert got[0][1].dtype == np.int32


def test_resume_skips_finished_shards(shapes, tmp_path):
    config = _with(shapes, encoded_dir=str(tmp_path / "e"))
    calls = []

    def counting(images):
        calls.append(len(images))
        return fake_encoder(images)

    first = encode.run_encode(config, counting, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64,
                              process_index=0, process_count=1, progress=False, max_shards=2)
    assert first.encoded_images == 40 and not first.info["complete"]
    assert first.info["splits"]["train"]["missing_shards"] == 1
    done = encode.shard_path(str(tmp_path / "e"), "train", 0, 3, "tfrecord")
    mtime = os.path.getmtime(done)
    # A killed job leaves an .incomplete file, never a finished-looking shard.
    open(encode.shard_path(str(tmp_path / "e"), "train", 2, 3, "tfrecord") + ".incomplete", "w").close()
    calls.clear()
    second = encode.run_encode(config, counting, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64,
                               process_index=0, process_count=1, progress=False)
    assert second.encoded_images == 8 + 12  # the last train shard and the validation split only
    assert all(n == 8 for n in calls)  # fixed batch shape: padded, never a short batch
    assert second.info["complete"] and os.path.getmtime(done) == mtime
    got = _read_all(str(tmp_path / "e"), "train")
    want = _expected(config, "train")
    assert [c for c, _ in got] == [c for c, _ in want]
    np.testing.assert_array_equal(np.stack([t for _, t in got]), np.stack([t for _, t in want]))
    # Another VQGAN must not resume into this directory.
    with pytest.raises(ValueError, match="config hash"):
        encode.run_encode(config, counting, vqgan_config=data_helpers.ConfigDict({"model": {"n_embed": 1}}),
                          codebook_size=1, process_index=0, process_count=1, progress=False)


def test_another_vqgan_is_refused_even_before_the_first_run_finished(shapes, tmp_path):
    """info.json is written at the end; the VQGAN's hash is recorded before the first shard."""
    config = _with(shapes, encoded_dir=str(tmp_path / "e"))
    encode.run_encode(config, fake_encoder, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64, process_index=0,
                      process_count=1, progress=False, max_shards=1)
    os.remove(tmp_path / "e" / encode.INFO_FILE)  # as if killed before the end
    other = data_helpers.ConfigDict({"model": {"n_embed": 1}})
    with pytest.raises(ValueError, match="config hash .*encoder.json.*use another data.encoded_dir"):
        encode.run_encode(config, fake_encoder, vqgan_config=other, codebook_size=1, process_index=0,
                          process_count=1, progress=False)


def test_each_process_encodes_its_own_shards(shapes, tmp_path):
    config = _with(shapes, encoded_dir=str(tmp_path / "mp"))
    seen = {0: [], 1: []}
    for pi in (1, 0):  # process 0 last: it writes info.json once every shard exists (a barrier does this live)
        def enc(images, pi=pi):
            seen[pi].append(images.shape[0])
            return fake_encoder(images)

        encode.run_encode(config, enc, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64, process_index=pi,
                          process_count=2, progress=False)
    assert seen[0] and seen[1] and all(n == 4 for n in seen[0] + seen[1])  # global batch 8 over 2 processes
    assert len(seen[0]) == len(seen[1])  # lockstep: the same number of (collective) encoder calls
    ranges = {}
    for k in range(3):
        with open(encode.sidecar_path(encode.shard_path(str(tmp_path / "mp"), "train", k, 3, "tfrecord"))) as f:
            ranges[k] = json.load(f)["input_range"]
    assert ranges == {0: [0, 20], 1: [20, 40], 2: [40, 48]}
    info = encode.read_info(str(tmp_path / "mp"))
    assert info["complete"] and info["splits"]["train"]["count"] == 48
    want = _expected(config, "train")
    got = _read_all(str(tmp_path / "mp"), "train")
    np.testing.assert_array_equal(np.stack([t for _, t in got]), np.stack([t for _, t in want]))


def test_errors(shapes, tmp_path):
    with pytest.raises(ValueError, match="encoded_dir is empty"):
        encode.run_encode(_with(shapes, encoded_dir=""), fake_encoder, process_index=0, process_count=1)
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        encode.run_encode(_with(shapes, encoded_dir=str(tmp_path / "x")), fake_encoder, process_index=0,
                          process_count=3)
    with pytest.raises(FileNotFoundError, match="dalle encode"):
        encode.read_info(str(tmp_path / "nothing"))


@pytest.mark.slow  # ~35 s on 2 shared cores, most of it compiling the VQGAN twice
def test_dalle_encode_cli_with_cpu_vqgan(shapes, tmp_path, capsys):
    """`dalle encode` on the shapes data with a random-init configs/vqgan_f4_32.py VQGAN, then the seqio task."""
    import jax

    from dalle import model_dir as checkpoint
    from dalle import config as config_lib
    from dalle.data import tasks
    from dalle.tokenizers import sentencepiece as tokenizer
    from dalle.modeling.vqgan import model as vqgan_lib

    vq_config = config_lib.load_config("configs/vqgan_f4_32.py", ["--config.model.n_embed=512"])
    params = vqgan_lib.VQGAN(vqgan_lib.VQGANConfig.from_config(vq_config)).init(jax.random.PRNGKey(0))
    ckpt = checkpoint.save_model(str(tmp_path / "vqgan"), params, vq_config)
    tokenizer.train_from_config(shapes.data)
    cfg = tmp_path / "cfg.py"
    cfg.write_text("from ml_collections import ConfigDict\n"
                   "def get_config(arg=None):\n"
                   f"    return ConfigDict({{'data': {shapes.data.to_dict()!r}}})\n")
    rc = encode.main(["--config", str(cfg), f"--config.data.vqgan_checkpoint={ckpt}",
                      f"--config.data.encoded_dir={tmp_path / 'out'}", "--config.data.encode_splits=validation",
                      "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads(printed[printed.index("{\n"):])
    assert summary["counts"] == {"validation": 12} and summary["token_shape"] == [8, 8]
    assert summary["images_per_second"] > 0
    print(f"\nencode images/s (f4 VQGAN, 32 px, CPU): {summary['images_per_second']}")
    info = encode.read_info(str(tmp_path / "out"))
    assert info["codebook_size"] == 512 and info["vqgan_config_hash"] == encode.config_hash(vq_config)
    # The tokens are the VQGAN's.
    from dalle.modeling.vqgan.api import VQGANTokenizer

    tok = VQGANTokenizer.from_checkpoint(ckpt)
    builder = build.load_builder(shapes.data)
    images = np.stack([ex["image"] for ex in tfds.as_numpy(builder.as_dataset(split="validation",
                                                                                 shuffle_files=False))])
    got = np.stack([t for _, t in _read_all(str(tmp_path / "out"), "validation")])
    np.testing.assert_array_equal(got, tok.encode(images).reshape(len(images), -1))
    # ... and they feed the seqio task.
    data = shapes.data.copy_and_resolve_references()
    data.encoded_dir = str(tmp_path / "out")
    names = tasks.register_tasks(data, raw=False)
    ds = tasks.feature_converter_for("encdec")(
        __import__("seqio").get_mixture_or_task(names.eval).get_dataset(
            tasks.sequence_lengths(data, names.image_length), split="validation", shuffle=False),
        tasks.sequence_lengths(data, names.image_length))
    batch = next(ds.batch(4).as_numpy_iterator())
    assert batch["text_tokens"].shape == (4, data.max_text_length) and batch["image_tokens"].shape == (4, 64)
    np.testing.assert_array_equal(batch["image_tokens"], got[:4])


@pytest.mark.parametrize("shared", [True, False])
def test_two_processes_need_one_shared_output_folder(tmp_path, shared):
    """Two live processes: a folder both see passes; one folder per process (no shared filesystem) is refused by
    both, with the same error, before any shard is encoded."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "encode_dir_worker.py")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    folders = [tmp_path / "enc"] * 2 if shared else [tmp_path / "host0", tmp_path / "host1"]
    procs = [subprocess.Popen([sys.executable, worker, str(i), str(port), str(folders[i])], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
        if shared:
            assert "SHARED" in out, out[-3000:]
        else:
            assert "REFUSED" in out and "is not one folder that every process sees (process(es) [1]" in out, out
    assert not any(f.name.startswith(".shared-check") for folder in set(folders) for f in folder.iterdir())
