"""Golden fixtures from the real `transformers` package: tiny random BART, BERT and RoBERTa text encoders saved as
Hugging Face directories (what `model.encoder_init` accepts), with fixed inputs and their last hidden states.

They run in the dalle-mini venv (transformers 4.25.1 with flax; see tools/make_dalle_mini_fixtures.py --setup for
how it is made), since transformers is not a dependency of ours. From the repo root:

    .venv-dallemini/bin/python tools/make_hf_encoder_fixtures.py            # all three
    .venv-dallemini/bin/python tools/make_hf_encoder_fixtures.py --only bert

Each tests/fixtures/hf_encoders/<kind>/ holds what `save_pretrained` writes (config.json, flax_model.msgpack) and
the tokenizer in that model's own layout (BART / RoBERTa: byte-level BPE vocab.json + merges.txt + tokenizer.json,
trained here on a few captions; BERT: a hand-written WordPiece vocab.txt + tokenizer.json), plus `golden.npz`:
`input_ids` / `attention_mask` (the HF tokenizer's, right-padded to max_length) and `hidden` (the encoder's last
hidden states, float32). Weights are transformers' init plus noise on *every* parameter (norm scales and biases
too), so swapping any two of them, or dropping one, changes the output. Read by tests/test_hf_encoders.py.

bert/ also holds `wordpiece.npz`, the reference for dalle.tokenizers.wordpiece (tests/test_wordpiece.py): RAW_CAPTIONS
(case, accents, CJK, punctuation, unknown and over-long words, control characters, an empty caption) as the slow
`BertTokenizer` ids them, uncased (`ids`, untruncated, -1 padded) and with do_lower_case=False (`cased_ids`), and
right-padded to max_length (`input_ids`, `attention_mask`) with the encoder's last hidden states for those
(`hidden`). The fast tokenizer is checked to agree before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "hf_encoders")

MAX_LENGTH = 12  # the tiny shapes pipeline's data.max_text_length (tests/data_helpers.py)
CAPTIONS = ["a red circle on a blue square", "two green triangles", "a small yellow star above a big purple circle",
            "blue", "the circle is red and the square is green"]
# Enough vocabulary for the tiny shapes pipeline's sentencepiece ids (< 64) to be valid in every fixture.
SIZES = dict(hidden=32, layers=2, heads=2, ffn=48, max_positions=20)

# Captions for the WordPiece reference: raw strings, each exercising a step of BERT's tokenization.
RAW_CAPTIONS = ["A Red Circle on a BLUE square", "Café crème: two green triangles!",
                "the star \u661f is above 3 big squares.", "  blue\tsquare\n", "tri\u200bangle", "",
                "x" * 120 + " star",
                "a small yellow star above a big purple circle and a red triangle", "[MASK] circle [SEP] red"]
# A hand-written WordPiece vocabulary (BERT's special tokens first, [PAD] = 0 as in bert-base).
BERT_WORDS = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,")
              + ["a", "red", "blue", "green", "yellow", "purple", "circle", "square", "triangle", "star", "two",
                 "small", "big", "on", "above", "the", "is", "and", "of", "an", "in", "with"]
              + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + ["##s", "##le", "##er", "##ing"])


def _noisy(params, seed: int):
    """transformers' init plus noise on every leaf (embeddings more), as a nested dict of jax arrays."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax.traverse_util import flatten_dict, unflatten_dict

    rs = np.random.RandomState(seed)
    flat = flatten_dict(jax.device_get(params))
    out = {}
    for k, v in sorted(flat.items()):
        v = np.asarray(v, np.float32)
        scale = 0.5 if any("embed" in part for part in k) else 0.1
        out[k] = jnp.asarray(v + scale * rs.standard_normal(v.shape).astype(np.float32))
    return unflatten_dict(out)


def _bpe_tokenizer(directory: str, kind: str):
    """A byte-level BPE (<s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4) trained on CAPTIONS, loaded and re-saved through
    the model's own fast tokenizer class so the directory has the files that class writes."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizerFast, RobertaTokenizerFast

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CAPTIONS * 4, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(directory, exist_ok=True)
    tok.save_model(directory)
    cls = BartTokenizerFast if kind == "bart" else RobertaTokenizerFast
    hf = cls(vocab_file=os.path.join(directory, "vocab.json"), merges_file=os.path.join(directory, "merges.txt"))
    hf.save_pretrained(directory)
    return hf


def _wordpiece_tokenizer(directory: str):
    from transformers import BertTokenizerFast

    os.makedirs(directory, exist_ok=True)
    vocab = os.path.join(directory, "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(dict.fromkeys(BERT_WORDS)) + "\n")
    hf = BertTokenizerFast(vocab_file=vocab, do_lower_case=True)
    hf.save_pretrained(directory)
    return hf


def _padded(rows, fill: int = -1):
    import numpy as np

    out = np.full((len(rows), max(len(r) for r in rows)), fill, np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _wordpiece_reference(directory: str, model) -> None:
    """bert/wordpiece.npz (see the module docstring). Slow BertTokenizer ids, which the fast one must match (also
    when tokenizer_config.json's do_lower_case=false overrides the lowercasing tokenizer.json of a copy)."""
    import shutil
    import tempfile

    import numpy as np
    from transformers import BertTokenizer, BertTokenizerFast

    uncased = BertTokenizer.from_pretrained(directory)
    vocab = os.path.join(directory, "vocab.txt")
    cased = BertTokenizer(vocab_file=vocab, do_lower_case=False)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("vocab.txt", "tokenizer.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(directory, f), tmp)
        cased.save_pretrained(tmp)  # tokenizer_config.json with do_lower_case=false; tokenizer.json still lowercases
        shutil.copy(os.path.join(directory, "tokenizer.json"), tmp)
        cased_fast = BertTokenizerFast.from_pretrained(tmp)
        checks = [(uncased, BertTokenizerFast.from_pretrained(directory)), (cased, cased_fast)]
        for slow, fast in checks:
            for caption in RAW_CAPTIONS:
                assert slow(caption)["input_ids"] == fast(caption)["input_ids"], (caption, slow, fast)
    ids = [uncased(c)["input_ids"] for c in RAW_CAPTIONS]
    cased_ids = [cased(c)["input_ids"] for c in RAW_CAPTIONS]
    assert ids != cased_ids  # the captions tell the two apart
    batch = uncased(RAW_CAPTIONS, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    input_ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    hidden = model(input_ids=input_ids, attention_mask=mask, token_type_ids=np.zeros_like(input_ids)).last_hidden_state
    np.savez_compressed(os.path.join(directory, "wordpiece.npz"), captions=np.array(RAW_CAPTIONS),
                        ids=_padded(ids), cased_ids=_padded(cased_ids), input_ids=input_ids, attention_mask=mask,
                        hidden=np.asarray(hidden, np.float32))


def make(kind: str, seed: int) -> str:
    import numpy as np
    from transformers import (BartConfig, BertConfig, FlaxBartModel, FlaxBertModel, FlaxRobertaModel,
                              RobertaConfig)

    s = SIZES
    directory = os.path.join(OUT, kind)
    if kind == "bert":
        tok = _wordpiece_tokenizer(directory)
    else:
        tok = _bpe_tokenizer(directory, kind)
    vocab = len(tok)
    if kind == "bart":
        # A one-layer decoder rides along (FlaxBartModel has one); the converter ignores it.
        config = BartConfig(vocab_size=vocab, d_model=s["hidden"], encoder_layers=s["layers"], decoder_layers=1,
                            encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                            encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"],
                            max_position_embeddings=s["max_positions"], activation_function="gelu",
                            scale_embedding=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        model = FlaxBartModel(config, seed=seed)
    else:
        cls, config_cls = (FlaxBertModel, BertConfig) if kind == "bert" else (FlaxRobertaModel, RobertaConfig)
        extra = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1) if kind == "roberta" else {}
        config = config_cls(vocab_size=vocab, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                            num_attention_heads=s["heads"], intermediate_size=s["ffn"], hidden_act="gelu",
                            max_position_embeddings=s["max_positions"], hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0, **extra)
        model = cls(config, seed=seed, add_pooling_layer=False)
    model.params = _noisy(model.params, seed)
    model.save_pretrained(directory)

    batch = tok(CAPTIONS, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32)
    if kind == "bart":
        hidden = model.encode(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids)).last_hidden_state
    np.savez_compressed(os.path.join(directory, "golden.npz"), input_ids=ids, attention_mask=mask,
                        hidden=np.asarray(hidden, np.float32), captions=np.array(CAPTIONS))
    if kind == "bert":
        _wordpiece_reference(directory, model)
    return directory


KINDS = ("bart", "bert", "roberta")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated kinds (bart, bert, roberta)")
    args = parser.parse_args()
    for seed, kind in enumerate(KINDS):
        if args.only and kind not in args.only.split(","):
            continue
        directory = make(kind, seed)
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        files = ", ".join(sorted(os.listdir(directory)))
        print(f"wrote {os.path.relpath(directory, ROOT)} ({size // 1024} KiB: {files})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
