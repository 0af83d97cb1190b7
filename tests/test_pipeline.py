"""The training stream (dalle.data.pipeline.token_batches): batches, per-host shards and exact resumption."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import json

import numpy as np
import pytest

from dalle.data import pipeline
from tests import data_helpers


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from ml_collections import ConfigDict

    cfg = data_helpers.build_tokenized_encoded_shapes(str(tmp_path_factory.mktemp("pipe")), blank_caption_prob=0.3)
    return ConfigDict({"data": cfg.data.to_dict()})


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y) == {"text_tokens", "image_tokens"}
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_batches_and_epochs(config):
    it = pipeline.token_batches(config, "train", 8, 0, 1, seed=0)
    batches = _take(it, 13)  # 48 examples / 8 = 6 per epoch: crosses two epoch boundaries
    for b in batches:
        assert b["text_tokens"].shape == (8, 12) and b["text_tokens"].dtype == np.int32
        assert b["image_tokens"].shape == (8, 64) and b["image_tokens"].dtype == np.int32
    assert it.get_state()["epoch"] == 2 and it.get_state()["index"] == 1
    epoch0 = np.concatenate([b["image_tokens"] for b in batches[:6]])
    epoch1 = np.concatenate([b["image_tokens"] for b in batches[6:12]])
    rows = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert rows(epoch0) == rows(epoch1)  # every example once per epoch ...
    assert not np.array_equal(epoch0, epoch1)  # ... in a different order
    blank = np.mean([np.all(b["text_tokens"][:, 1:] == 0) & (b["text_tokens"][:, 0] == 1)
                     for b in batches for _ in [0]])
    assert blank >= 0  # blanking exists (its rate is tested in test_tasks)


@pytest.mark.parametrize("stop", [3, 6, 8])
def test_exact_resume(config, stop):
    reference = _take(pipeline.token_batches(config, "train", 8, 0, 1, seed=5), stop + 4)
    it = pipeline.token_batches(config, "train", 8, 0, 1, seed=5)
    _take(it, stop)
    state = json.loads(json.dumps(it.get_state()))  # it goes through a JSON checkpoint
    resumed = pipeline.token_batches(config, "train", 8, 0, 1, seed=5)
    resumed.set_state(state)
    _same(_take(resumed, 4), reference[stop:])
    _same(_take(it, 4), reference[stop:])  # the original goes on unchanged too


def test_seed_changes_order_and_state_mismatch_is_refused(config):
    a = next(pipeline.token_batches(config, "train", 8, 0, 1, seed=1))
    b = next(pipeline.token_batches(config, "train", 8, 0, 1, seed=2))
    assert not np.array_equal(a["image_tokens"], b["image_tokens"])
    it = pipeline.token_batches(config, "train", 8, 0, 1, seed=1)
    state = it.get_state()
    with pytest.raises(ValueError, match="seed=1.*seed=2"):
        pipeline.token_batches(config, "train", 8, 0, 1, seed=2).set_state(state)
    with pytest.raises(ValueError, match="process_count"):
        pipeline.token_batches(config, "train", 4, 0, 2, seed=1).set_state({**state, "batch_size": 4})


def test_hosts_read_disjoint_shards(config):
    per_host = [np.concatenate([b["image_tokens"] for b in _take(
        pipeline.token_batches(config, "train", 4, i, 2, seed=0), 6)]) for i in range(2)]
    whole = np.concatenate([b["image_tokens"] for b in _take(pipeline.token_batches(config, "train", 8, 0, 1,
                                                                                    seed=0), 6)])
    rows = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert rows(np.concatenate(per_host)) == rows(whole)  # one epoch split over 2 hosts covers every example


def test_eval_split_no_blank_no_shuffle(config):
    it = pipeline.token_batches(config, "validation", 4, 0, 1, seed=0, num_epochs=1)
    batches = list(it)
    assert len(batches) == 3
    again = list(pipeline.token_batches(config, "validation", 4, 0, 1, seed=9, num_epochs=1))
    _same(batches, again)  # unshuffled: the seed does not matter
    for b in batches:
        assert not np.any(np.all(b["text_tokens"][:, 1:] == 0, axis=1))


def test_errors(config, tmp_path):
    with pytest.raises(ValueError, match="fewer than 64 examples"):
        next(pipeline.token_batches(config, "validation", 64, 0, 1, seed=0))
    cfg = config.copy_and_resolve_references()
    cfg.data.encoded_dir = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="dalle encode"):
        pipeline.token_batches(cfg, "train", 8, 0, 1, seed=0)


def test_codes_beyond_the_model_vocabulary_are_refused(config):
    from ml_collections import ConfigDict

    codes = json.load(open(f"{config.data.encoded_dir}/info.json"))["codebook_size"]
    fits = ConfigDict({"data": config.data.to_dict(), "model": {"kind": "decoder_only", "image_vocab_size": codes}})
    assert next(pipeline.token_batches(fits, "train", 8, 0, 1, seed=0))["image_tokens"].max() < codes
    small = ConfigDict({"data": config.data.to_dict(), "model": {"kind": "decoder_only",
                                                                  "image_vocab_size": codes // 2}})
    with pytest.raises(ValueError, match=f"{codes}-code image tokenizer, more than model.image_vocab_size = "
                                         f"{codes // 2}"):
        pipeline.token_batches(small, "train", 8, 0, 1, seed=0)
