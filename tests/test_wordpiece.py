"""BERT's WordPiece as a run's text tokenizer (dalle.tokenizers.wordpiece): `data.tokenizer_path` = a BERT directory
gives the ids transformers' BertTokenizer gives (tests/fixtures/hf_encoders/bert/wordpiece.npz, made by
tools/make_hf_encoder_fixtures.py), in every layout BERT directories come in, with lowercasing per
tokenizer_config.json and dalle's pad-0 ids; a directory of neither layout is refused naming what it lacks."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from dalle.data import tasks
from dalle.data import text as text_lib
from dalle.tokenizers import bart_bpe
from dalle.tokenizers import sentencepiece as tokenizer_lib
from dalle.tokenizers import wordpiece

BERT = os.path.join(os.path.dirname(__file__), "fixtures", "hf_encoders", "bert")
BART = os.path.join(os.path.dirname(__file__), "fixtures", "hf_encoders", "bart")
RAW = text_lib.NormalizerOptions(normalizer="none")  # the captions reach the tokenizer as they are


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(os.path.join(BERT, "wordpiece.npz")) as z:
        return {k: z[k] for k in z.files}


def _rows(ids: np.ndarray) -> list[list[int]]:
    return [[int(i) for i in row if i >= 0] for row in ids]


def _copy(tmp_path, files: tuple[str, ...], config: dict | None = None) -> str:
    """A BERT tokenizer directory with only `files` of the fixture's (and tokenizer_config.json = `config`)."""
    out = tmp_path / "tok"
    out.mkdir()
    for f in files:
        shutil.copy(os.path.join(BERT, f), out)
    if config is not None:
        (out / "tokenizer_config.json").write_text(json.dumps(config))
    return str(out)


def _ids(vocab, caption: str) -> list[int]:
    """A whole caption as dalle frames it untruncated: encode ([CLS] first), then EOS ([SEP])."""
    return list(vocab.encode(caption)) + [vocab.eos_id]


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.txt only", "vocab.txt path"])
def test_a_bert_directory_tokenizes_as_transformers_bert_tokenizer(layout, ref, tmp_path):
    if layout == "tokenizer.json":
        path = BERT
    else:
        path = _copy(tmp_path, ("vocab.txt", "special_tokens_map.json", "tokenizer_config.json"))
        if layout == "vocab.txt path":
            path = os.path.join(path, "vocab.txt")
    vocab = tokenizer_lib.load_vocabulary(path)
    assert isinstance(vocab, wordpiece.WordPieceVocabulary)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 2, 3, 1)  # bert-base's [PAD] is 0
    assert vocab.source.endswith("tokenizer.json" if layout == "tokenizer.json" else "vocab.txt")
    for caption, want in zip(ref["captions"], _rows(ref["ids"])):
        assert _ids(vocab, str(caption)) == want, caption


def test_the_pipeline_frames_captions_as_bert_does(ref):
    """dalle's caption encoder (truncate to max_text_length - 1, EOS, pad 0) on raw strings = BertTokenizer with
    truncation and max_length padding; the tf path the seqio tasks take gives the same ids."""
    vocab = tokenizer_lib.load_vocabulary(BERT)
    length = ref["input_ids"].shape[1]
    ours = tasks.encode_captions([str(c) for c in ref["captions"]], vocab, length, RAW)
    np.testing.assert_array_equal(ours, ref["input_ids"])
    assert any(len(row) > length for row in _rows(ref["ids"]))  # some captions are cut: truncation is exercised
    for caption, want in zip(ref["captions"], _rows(ref["ids"])):
        np.testing.assert_array_equal(vocab.encode_tf(tf.constant(str(caption))).numpy(), want[:-1])


def test_decoding_drops_the_framing_and_padding():
    vocab = tokenizer_lib.load_vocabulary(BERT)
    ids = tasks.encode_captions(["Two green TRIANGLES."], vocab, 12, RAW)[0]
    assert ids[-1] == 0 and vocab.decode(ids.tolist()) == "two green triangles."


@pytest.mark.parametrize("with_tokenizer_json", [False, True])
def test_do_lower_case_false_keeps_the_case(with_tokenizer_json, ref, tmp_path):
    """tokenizer_config.json's do_lower_case=false is obeyed, also over a lowercasing tokenizer.json's normalizer
    (transformers' BertTokenizerFast overrides it the same way; the fixture tool checked that)."""
    files = ("vocab.txt", "tokenizer.json") if with_tokenizer_json else ("vocab.txt",)
    vocab = tokenizer_lib.load_vocabulary(_copy(tmp_path, files, {"do_lower_case": False}))
    assert vocab.do_lower_case is False
    for caption, want in zip(ref["captions"], _rows(ref["cased_ids"])):
        assert _ids(vocab, str(caption)) == want, caption
    assert _rows(ref["cased_ids"]) != _rows(ref["ids"])


def test_a_pad_id_other_than_0_trades_places_with_0(ref, tmp_path):
    """With [PAD] at line 3 and [SEP] at line 0 (a permuted vocab.txt), BERT's ids are the fixture's with 0 and 3
    exchanged; ours swap them back, so pad is 0 and every other token keeps the fixture's id."""
    lines = open(os.path.join(BERT, "vocab.txt"), encoding="utf-8").read().splitlines()
    lines[0], lines[3] = lines[3], lines[0]
    directory = _copy(tmp_path, ("special_tokens_map.json", "tokenizer_config.json"))
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    vocab = tokenizer_lib.load_vocabulary(directory)
    assert vocab._tok.token_to_id("[PAD]") == 3 and vocab._tok.token_to_id("[SEP]") == 0
    assert (vocab.pad_id, vocab.eos_id) == (0, 3)
    for caption, want in zip(ref["captions"], _rows(ref["ids"])):
        assert _ids(vocab, str(caption)) == want, caption


def test_the_layout_is_read_from_the_files_not_the_name(tmp_path):
    assert wordpiece.layout(BERT) == "wordpiece" and wordpiece.layout(os.path.join(BERT, "tokenizer.json")) == \
        "wordpiece"
    assert wordpiece.layout(BART) == "bpe"
    assert isinstance(tokenizer_lib.load_vocabulary(BART), bart_bpe.BpeVocabulary)
    bare = _copy(tmp_path, ("vocab.txt",))
    assert wordpiece.layout(bare) == "wordpiece"  # vocab.txt alone: transformers' defaults ([CLS], lowercase)
    assert tokenizer_lib.load_vocabulary(bare).do_lower_case is True


def test_a_directory_of_neither_layout_is_refused_naming_the_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as e:
        tokenizer_lib.load_vocabulary(str(empty))
    for name in ("tokenizer.json", "vocab.txt", "vocab.json + merges.txt", str(empty)):
        assert name in str(e.value), name
    unigram = tmp_path / "unigram"
    unigram.mkdir()
    (unigram / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(ValueError, match=r"tokenizer\.json' holds a Unigram model"):
        tokenizer_lib.load_vocabulary(str(unigram))
    no_cls = tmp_path / "no_cls"
    no_cls.mkdir()
    (no_cls / "vocab.txt").write_text("[PAD]\n[UNK]\n[SEP]\na\n")
    with pytest.raises(ValueError) as e:
        tokenizer_lib.load_vocabulary(str(no_cls))
    assert "vocab.txt' is not a BERT WordPiece vocabulary: it has no cls_token '[CLS]'" in str(e.value)
