"""seqio tasks, mixtures and feature converters (dalle.data.tasks) over tiny shapes data encoded here."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from dalle.data import build, encode, tasks, text
from dalle.tokenizers import sentencepiece as tokenizer
from tests import data_helpers


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return data_helpers.build_tokenized_encoded_shapes(str(tmp_path_factory.mktemp("tasks")))


def _batches(name, data, split, n, *, seed=None, shuffle=False, shard=None, kind="encdec"):
    lengths = tasks.sequence_lengths(data, 64)
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=shuffle, seed=seed,
                                                     shard_info=shard, num_epochs=1)
    ds = tasks.feature_converter_for(kind)(ds, lengths)
    return list(ds.batch(n).as_numpy_iterator())


def test_batch_shapes_dtypes_values(config):
    data = config.data
    names = tasks.register_tasks(data)
    assert (names.train, names.eval, names.raw) == ("dalle_shapes", "dalle_shapes_eval", "dalle_shapes_raw")
    assert names.image_length == 64 and names.codebook_size == 64
    vocab = tokenizer.load_vocabulary(data.tokenizer_path)
    batches = _batches(names.eval, data, "validation", 12)
    assert len(batches) == 1
    b = batches[0]
    assert set(b) == {"text_tokens", "image_tokens"}
    assert b["text_tokens"].shape == (12, 12) and b["text_tokens"].dtype == np.int32
    assert b["image_tokens"].shape == (12, 64) and b["image_tokens"].dtype == np.int32
    # Values: in file order, the text is the normalized caption + EOS padded with 0, the image tokens the codes.
    builder = build.load_builder(data)
    examples = list(tfds.as_numpy(builder.as_dataset(split="validation", shuffle_files=False)))
    expected_text = tasks.encode_captions([e["caption"].decode() for e in examples], vocab, 12,
                                          text.options_from_config(data))
    np.testing.assert_array_equal(b["text_tokens"], expected_text)
    np.testing.assert_array_equal(b["image_tokens"],
                                  data_helpers.fake_encoder(np.stack([e["image"] for e in examples])).reshape(12, -1))
    for row in b["text_tokens"]:
        n = int(np.sum(row != 0))
        assert row[n - 1] == vocab.eos_id and np.all(row[n:] == 0)
        decoded = vocab.decode(row[: n - 1].tolist())  # a prefix when the caption was truncated
        assert any(text.normalize_caption(e["caption"].decode()).startswith(decoded) for e in examples), decoded


def test_truncation_keeps_eos(config):
    data = config.data.copy_and_resolve_references()
    data.max_text_length = 4
    data.task_name = "dalle_trunc"
    names = tasks.register_tasks(data, raw=False)
    b = _batches(names.eval, data, "validation", 12)[0]
    assert b["text_tokens"].shape == (12, 4)
    assert np.all(b["text_tokens"][:, 3] == 1)  # shapes captions are longer than 3 pieces: EOS last, no padding
    full = _batches("dalle_shapes_eval", config.data, "validation", 12)[0]
    np.testing.assert_array_equal(b["text_tokens"][:, :3], full["text_tokens"][:, :3])


def test_blank_caption_prob_is_seeded(config):
    data = config.data.copy_and_resolve_references()
    data.blank_caption_prob = 0.5
    data.task_name = "dalle_blank"
    names = tasks.register_tasks(data, raw=False)

    def blanks(seed):
        b = _batches(names.train, data, "train", 48, seed=seed)[0]["text_tokens"]
        return (b[:, 0] == 1) & np.all(b[:, 1:] == 0, axis=1)  # [EOS, 0, 0, ...] = the empty caption

    a, again, other = blanks(1), blanks(1), blanks(2)
    np.testing.assert_array_equal(a, again)
    assert 10 <= a.sum() <= 38 and not np.array_equal(a, other)
    # The eval task never blanks.
    ev = _batches(names.eval, data, "train", 48, seed=1)[0]["text_tokens"]
    assert not np.any((ev[:, 0] == 1) & np.all(ev[:, 1:] == 0, axis=1))


@pytest.mark.parametrize("key,value", [("caption_unknown_word_prob", 1.0), ("caption_swap_prob", 1.0),
                                       ("caption_word_dropout", 0.4)])
def test_caption_noise_in_training_only(config, key, value):
    data = config.data.copy_and_resolve_references()
    data[key] = value
    data.max_text_length = 64  # room for every caption plus the made-up word: no truncation to compare
    data.task_name = f"dalle_noise_{key}"
    names = tasks.register_tasks(data, raw=False)
    vocab = tokenizer.load_vocabulary(data.tokenizer_path)
    noisy = _batches(names.train, data, "train", 48, seed=1)[0]["text_tokens"]
    again = _batches(names.train, data, "train", 48, seed=1)[0]["text_tokens"]
    clean = _batches(names.eval, data, "train", 48, seed=1)[0]["text_tokens"]
    np.testing.assert_array_equal(noisy, again)  # seeded: resumption replays the same captions
    words = lambda row: [t for t in row.tolist() if t not in (0, vocab.eos_id)]  # noqa: E731
    changed = 0
    for a, b in zip(noisy, clean):
        a, b = words(a), words(b)
        assert a, "a caption lost every word"
        changed += a != b
        if key == "caption_unknown_word_prob":  # one made-up word inserted: the caption's pieces in order, plus some
            it = iter(a)
            assert len(a) > len(b) and all(t in it for t in b)
        elif key == "caption_swap_prob":  # two neighbours swapped: the same pieces
            assert sorted(a) == sorted(b)
        else:
            assert len(a) <= len(b)
    assert changed >= 40
    assert tasks.fingerprint(data) != tasks.fingerprint(config.data)


def test_shard_info_partitions_examples(config):
    data = config.data
    tasks.register_tasks(data, raw=False)
    whole = _batches("dalle_shapes_eval", data, "train", 48)[0]["image_tokens"]
    parts = [_batches("dalle_shapes_eval", data, "train", 48, shard=seqio.ShardInfo(i, 2))[0]["image_tokens"]
             for i in range(2)]
    assert sum(len(p) for p in parts) == 48
    key = lambda rows: sorted(map(bytes, rows.astype(np.int32)))  # noqa: E731
    assert key(np.concatenate(parts)) == key(whole)
    assert not set(key(parts[0])) & set(key(parts[1])) or len(set(key(whole))) < 48


def test_shuffle_is_deterministic(config):
    tasks.register_tasks(config.data, raw=False)
    a = _batches("dalle_shapes", config.data, "train", 48, seed=3, shuffle=True)[0]["image_tokens"]
    b = _batches("dalle_shapes", config.data, "train", 48, seed=3, shuffle=True)[0]["image_tokens"]
    c = _batches("dalle_shapes", config.data, "train", 48, seed=4, shuffle=True)[0]["image_tokens"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_decoder_only_converter_and_errors(config):
    tasks.register_tasks(config.data, raw=False)
    enc = _batches("dalle_shapes_eval", config.data, "validation", 12)[0]
    dec = _batches("dalle_shapes_eval", config.data, "validation", 12, kind="decoder_only")[0]
    assert set(dec) == set(enc)
    for k in enc:
        np.testing.assert_array_equal(dec[k], enc[k])
    with pytest.raises(ValueError, match="no feature converter for model kind 'gpt'"):
        tasks.feature_converter_for("gpt")
    with pytest.raises(ValueError, match="does not pack"):
        tasks.DalleEncDecFeatureConverter(pack=True)


def test_raw_task_has_images(config):
    names = tasks.register_tasks(config.data)
    ds = seqio.get_mixture_or_task(names.raw).get_dataset({"inputs": 12}, split="validation", shuffle=False)
    ex = next(ds.as_numpy_iterator())
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert ex["inputs"][-1] == 1 and ex["inputs"].dtype == np.int32


def test_mixture(config, tmp_path):
    data = config.data.copy_and_resolve_references()
    # A second encoded dataset: the same shapes encoded with an encoder whose codes are all 7.
    other = data.copy_and_resolve_references()
    other.encoded_dir = str(tmp_path / "other")
    cfg = config.copy_and_resolve_references()
    cfg.data = other
    encode.run_encode(cfg, lambda im: np.full((len(im), 8, 8), 7, np.int32), vqgan_config=data_helpers
                      .FAKE_VQGAN_CONFIG, codebook_size=64, process_index=0, process_count=1, progress=False)
    data.mixture = (f"{other.encoded_dir}:1.0",)
    data.task_name = "dalle_mixed"
    names = tasks.register_tasks(data, raw=False)
    assert names.train == "dalle_mixed_mix"
    lengths = tasks.sequence_lengths(data, 64)
    ds = seqio.get_mixture_or_task(names.train).get_dataset(lengths, split="train", shuffle=True, seed=0,
                                                            num_epochs=None)
    rows = next(tasks.feature_converter_for("encdec")(ds, lengths).batch(64).as_numpy_iterator())["image_tokens"]
    from_other = np.all(rows == 7, axis=1).sum()
    assert 16 <= from_other <= 48  # rate 1:1
    # A member encoded with a larger codebook than the primary's is refused, naming both.
    bigger = data.copy_and_resolve_references()
    bigger.encoded_dir = str(tmp_path / "bigger")
    cfg.data = bigger
    encode.run_encode(cfg, lambda im: np.full((len(im), 8, 8), 100, np.int32), vqgan_config=data_helpers
                      .FAKE_VQGAN_CONFIG, codebook_size=128, process_index=0, process_count=1, progress=False)
    data.mixture = (f"{bigger.encoded_dir}:1.0",)
    with pytest.raises(ValueError, match="holds codes of a 128-code image tokenizer, but .* has 64 codes"):
        tasks.register_tasks(data, raw=False)


def test_missing_inputs_are_named(config, tmp_path):
    data = config.data.copy_and_resolve_references()
    data.tokenizer_path = str(tmp_path / "none.model")
    with pytest.raises(FileNotFoundError, match="dalle tokenizer train"):
        tasks.register_tasks(data)
    data = config.data.copy_and_resolve_references()
    data.source, data.encoded_dir = "encoded", str(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="dalle encode"):
        tasks.register_tasks(data)
