"""Sentencepiece training on a dataset's captions (dalle.tokenizers.sentencepiece) and its use through seqio."""

from __future__ import annotations

import json
import os
import time

import pytest

from dalle.data import build, text
from dalle.tokenizers import sentencepiece as tokenizer
from tests import data_helpers


def test_train_tokenizer_on_captions(tmp_path):
    captions = [f"A {c} {s} in the {p}" for c in ("red", "green", "blue", "Yellow") for s in ("circle", "square",
                "star") for p in ("top left", "center", "bottom right")] * 3
    captions += ["cafÃ© sign", "   ", ""]
    path = str(tmp_path / "tok.model")
    start = time.time()
    info = tokenizer.train_tokenizer(captions, path, 60, normalizer=text.NormalizerOptions())
    assert time.time() - start < 20
    assert info["num_captions"] == len(captions) - 2  # the blank ones are left out
    assert os.path.isfile(path) and json.load(open(path + ".json"))["vocab_size"] == info["vocab_size"]
    vocab = tokenizer.load_vocabulary(path)
    assert vocab.pad_id == 0 and vocab.eos_id == 1 and vocab.unk_id == 2
    assert vocab.vocab_size == info["vocab_size"] <= 60
    ids = vocab.encode("a red star in the center")
    assert 0 not in ids and vocab.decode(ids) == "a red star in the center"
    # Lowercased before training: no piece holds an upper-case letter ("Yellow" was in the captions).
    pieces = [vocab.tokenizer.id_to_piece(i) for i in range(3, vocab.vocab_size)]
    assert not any(ch.isupper() for p in pieces for ch in p) and any("y" in p for p in pieces)
    tokenizer.check_normalizer(path, text.NormalizerOptions())
    with pytest.raises(ValueError, match="lowercase"):
        tokenizer.check_normalizer(path, text.NormalizerOptions(lowercase=False))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="must end with .model"):
        tokenizer.train_tokenizer(["x"], str(tmp_path / "tok"), 10)
    with pytest.raises(ValueError, match="no non-empty captions"):
        tokenizer.train_tokenizer(["", " "], str(tmp_path / "t.model"), 10)
    with pytest.raises(FileNotFoundError, match="dalle tokenizer train"):
        tokenizer.load_vocabulary(str(tmp_path / "missing.model"))


def test_dalle_tokenizer_train_cli_on_shapes(tmp_path, capsys):
    config = data_helpers.shapes_config(str(tmp_path))
    build.build_dataset(config.data)
    cfg = tmp_path / "cfg.py"
    cfg.write_text("from ml_collections import ConfigDict\n"
                   "def get_config(arg=None):\n"
                   f"    return ConfigDict({{'data': {config.data.to_dict()!r}}})\n")
    out_path = tmp_path / "cli" / "shapes.model"
    start = time.time()
    rc = tokenizer.main(["train", "--config", str(cfg), f"--config.data.tokenizer_path={out_path}"])
    seconds = time.time() - start
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, printed
    assert "tokenizer: captions" in captured.err and "tokenizer: training sentencepiece" in captured.err
    info = json.loads(printed[printed.index("{\n"):])
    assert info["num_captions"] == data_helpers.SHAPES_SIZES["train_size"]
    vocab = tokenizer.load_vocabulary(str(out_path))
    captions = list(tokenizer.iter_dataset_captions(config.data, "validation"))
    assert len(captions) == data_helpers.SHAPES_SIZES["validation_size"]
    for c in captions:  # every shapes word is covered: no unknown pieces on held-out captions
        ids = vocab.encode(text.normalize_caption(c))
        assert vocab.unk_id not in ids, c
    print(f"tokenizer CLI on shapes: {seconds:.2f}s")
