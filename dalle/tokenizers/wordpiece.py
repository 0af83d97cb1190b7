"""BERT's WordPiece tokenizer as a `seqio.Vocabulary`, so a run whose text encoder is a Hugging Face BERT
(`model.encoder_init`, dalle.modeling.hf_encoders) reads captions with that encoder's own ids.

BERT frames a caption as `[CLS] tokens [SEP] [PAD] ...`. dalle's convention is pad = 0 (seqio pads with 0), so
when the vocabulary's [PAD] is not 0 (bert-base's is), ids 0 and [PAD] trade places here, exactly as
`hf_encoders.convert_params` swaps rows 0 and `pad_token_id` of the token table. `encode` prepends [CLS] and
`eos_id` is [SEP]: with dalle's caption encoder (encode, truncate to max_text_length - 1, append EOS, pad 0) a
caption becomes what `BertTokenizer(..., truncation=True, max_length=max_text_length, padding="max_length")` gives.

The tokenization itself is the `tokenizers` library's: tokenizer.json when the directory has one (what
`BertTokenizerFast` reads), else vocab.txt with BERT's normalizer and pre-tokenizer. Lower-casing, accent
stripping and CJK splitting follow tokenizer_config.json (`do_lower_case`, `strip_accents`,
`tokenize_chinese_chars`, with transformers' defaults), overriding tokenizer.json's normalizer as transformers does.

`vocabulary(path)` picks this class or the byte-level BPE of dalle.tokenizers.bart_bpe from what a directory holds.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import seqio

from dalle.tokenizers import bart_bpe

TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
_SPECIALS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
             "mask_token": "[MASK]"}


def _read_json(path: str) -> dict[str, Any]:
    """A JSON object file, {} when absent; a broken one raises naming it (a silent default would tokenize
    differently from the model's own tokenizer)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path!r} is not readable JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path!r}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_settings(directory: str) -> dict[str, Any]:
    """The options BertTokenizerFast would use for `directory`: special tokens (special_tokens_map.json over
    tokenizer_config.json, as `from_pretrained` merges them) and the normalizer switches with its defaults."""
    config = _read_json(os.path.join(directory, "tokenizer_config.json"))
    specials = _read_json(os.path.join(directory, "special_tokens_map.json"))
    out: dict[str, Any] = {}
    for key, default in _SPECIALS.items():
        out[key] = _token(specials.get(key)) or _token(config.get(key)) or default
    extra = specials.get("additional_special_tokens", config.get("additional_special_tokens")) or []
    out["additional_special_tokens"] = [t for t in map(_token, extra) if t]
    out["do_lower_case"] = bool(config.get("do_lower_case", True))
    out["strip_accents"] = config.get("strip_accents")
    out["tokenize_chinese_chars"] = bool(config.get("tokenize_chinese_chars", True))
    return out


def _model_type(tokenizer_json: str) -> str:
    """The `model.type` of a tokenizer.json ("WordPiece", "BPE", "Unigram", ...); raises naming the file."""
    kind = _read_json(tokenizer_json).get("model", {}).get("type")
    if not isinstance(kind, str):
        raise ValueError(f"{tokenizer_json!r} has no model.type: not a Hugging Face tokenizers file")
    return kind


def layout(path: str) -> str:
    """"wordpiece" or "bpe": which tokenizer `path` (a directory, its tokenizer.json or vocab.txt) holds, read from
    its files rather than its name. Raises naming the files looked for when it is neither."""
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    name = os.path.basename(path) if os.path.isfile(path) else ""
    tok_json = path if name == TOKENIZER_JSON else os.path.join(directory, TOKENIZER_JSON)
    if name == VOCAB_TXT:
        return "wordpiece"
    if os.path.isfile(tok_json):
        kind = _model_type(tok_json)
        if kind in ("WordPiece", "BPE"):
            return kind.lower()  # "wordpiece" / "bpe"
        raise ValueError(f"data.tokenizer_path {path!r}: {tok_json!r} holds a {kind} model; dalle reads "
                         f"WordPiece (BERT) or byte-level BPE (BART, RoBERTa) tokenizers")
    if os.path.isfile(os.path.join(directory, VOCAB_TXT)):
        return "wordpiece"
    if all(os.path.isfile(os.path.join(directory, f)) for f in ("vocab.json", "merges.txt")):
        return "bpe"
    raise FileNotFoundError(
        f"data.tokenizer_path {path!r} is no tokenizer directory: it has neither {TOKENIZER_JSON}, nor {VOCAB_TXT} "
        f"(BERT WordPiece), nor vocab.json + merges.txt (BART / RoBERTa byte-level BPE)")


def vocabulary(path: str) -> seqio.Vocabulary:
    """The vocabulary of a Hugging Face tokenizer directory (or its tokenizer.json / vocab.txt), by its layout."""
    if layout(path) == "wordpiece":
        return WordPieceVocabulary(path)
    return bart_bpe.BpeVocabulary(path)


class WordPieceVocabulary(bart_bpe.PythonVocabulary):
    """BERT's WordPiece (tokenizer.json or vocab.txt + tokenizer_config.json) with dalle's pad-0 id layout."""

    def __init__(self, path: str, extra_ids: int = 0):
        from tokenizers import Tokenizer, normalizers
        from tokenizers.implementations import BertWordPieceTokenizer

        self.path = path
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        settings = tokenizer_settings(directory)
        tok_json = os.path.join(directory, TOKENIZER_JSON)
        vocab_txt = os.path.join(directory, VOCAB_TXT)
        norm = dict(lowercase=settings["do_lower_case"], strip_accents=settings["strip_accents"],
                    handle_chinese_chars=settings["tokenize_chinese_chars"])
        if os.path.basename(path) != VOCAB_TXT and os.path.isfile(tok_json):
            source = tok_json
            self._tok = Tokenizer.from_file(tok_json)
            state = _read_json(tok_json).get("normalizer") or {}
            # transformers' BertTokenizerFast replaces a BertNormalizer that disagrees with tokenizer_config.json.
            if state.get("type") == "BertNormalizer" and any(state.get(k, v) != v for k, v in norm.items()):
                self._tok.normalizer = normalizers.BertNormalizer(clean_text=state.get("clean_text", True), **norm)
        elif os.path.isfile(vocab_txt):
            source = vocab_txt
            self._check_specials(vocab_txt, settings, _vocab_txt_tokens(vocab_txt))
            wrapper = BertWordPieceTokenizer(vocab_txt, unk_token=settings["unk_token"],
                                             sep_token=settings["sep_token"], cls_token=settings["cls_token"],
                                             pad_token=settings["pad_token"], mask_token=settings["mask_token"],
                                             clean_text=True, **norm)
            self._tok = wrapper._tokenizer  # the plain Tokenizer: encode/decode/token_to_id as from_file gives
        else:
            raise FileNotFoundError(f"{path!r}: no {TOKENIZER_JSON} nor {VOCAB_TXT} (a BERT tokenizer directory, "
                                    f"as save_pretrained writes it, has them)")
        self._tok.no_truncation()  # dalle truncates (to max_text_length - 1, then EOS); a saved limit would cut
        self._tok.no_padding()     # earlier, and padding is seqio's
        self._check_specials(source, settings, self._tok.get_vocab(with_added_tokens=True))
        # A "[SEP]" typed in a caption is one token, as transformers makes every special token of the directory
        # (tokenizer.json often lists none of them as added tokens); those already in the vocabulary keep their ids.
        named = [settings[k] for k in _SPECIALS] + settings["additional_special_tokens"]
        self._tok.add_special_tokens([t for t in dict.fromkeys(named) if self._tok.token_to_id(t) is not None])
        self.source = source
        self.do_lower_case = settings["do_lower_case"]
        ids = {key: self._tok.token_to_id(settings[key]) for key in ("cls_token", "sep_token", "pad_token",
                                                                       "unk_token")}
        self._pad = int(ids["pad_token"])
        self._cls, self._sep, self._unk = (self._swap(int(ids[k])) for k in ("cls_token", "sep_token", "unk_token"))
        self._size = self._tok.get_vocab_size(with_added_tokens=True)
        super().__init__(extra_ids=extra_ids)

    @staticmethod
    def _check_specials(source: str, settings: dict[str, Any], vocab: Iterable[str]) -> None:
        """[CLS], [SEP], [PAD] and [UNK] (or the directory's names for them) must be in the vocabulary."""
        have = set(vocab)
        missing = [f"{key} {settings[key]!r}" for key in ("cls_token", "sep_token", "pad_token", "unk_token")
                   if settings[key] not in have]
        if missing:
            raise ValueError(f"{source!r} is not a BERT WordPiece vocabulary: it has no {', '.join(missing)}")

    def _swap(self, i: int) -> int:
        """Source id <-> dalle id (an involution: 0 <-> [PAD]; the identity when [PAD] is 0)."""
        return self._pad if i == 0 else 0 if i == self._pad else i

    # --- seqio.Vocabulary -------------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return self._sep

    @property
    def unk_id(self) -> int:
        return self._unk

    @property
    def bos_id(self) -> int:
        return self._cls

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    def _encode(self, s: str) -> Sequence[int]:
        ids = self._tok.encode(s, add_special_tokens=False).ids
        return [self._cls] + [self._swap(i) for i in ids]

    def _decode(self, ids: Iterable[int]) -> str:
        framing = {0, self._cls, self._sep}
        source = [self._swap(int(i)) for i in ids if int(i) not in framing]
        return self._tok.decode(source, skip_special_tokens=True)

    def __eq__(self, other):
        return isinstance(other, WordPieceVocabulary) and other.path == self.path


def _vocab_txt_tokens(path: str) -> list[str]:
    """vocab.txt's tokens, one a line (transformers' `load_vocab` strips only the newline)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
