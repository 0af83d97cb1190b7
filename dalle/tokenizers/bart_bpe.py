"""dalle-mini's BART byte-level BPE tokenizer as a `seqio.Vocabulary`, so a converted model reads raw prompts.

dalle-mini tokenizes a caption as `<s> tokens </s> <pad> ...` with BART ids `<s>`=0, `<pad>`=1, `</s>`=2,
`<unk>`=3. dalle's convention is pad = 0 everywhere (seqio feature converters pad with 0). So this vocabulary
*swaps ids 0 and 1* and the converter swaps rows 0 and 1 of the text embedding accordingly
(`convert_dalle_mini.py`): our pad 0 is BART `<pad>`, our 1 is BART `<s>`, and `eos_id` is 2 (`</s>`).

`encode` prepends `<s>` (our id 1). With dalle's caption encoder (`dalle.data.tasks.encode_captions`: encode,
truncate to max_text_length - 1, append `eos_id`, pad with 0) a caption becomes exactly dalle-mini's
`<s> tokens </s> <pad>...` (truncated the same way), and the empty caption becomes `<s></s>`, dalle-mini's
unconditional prompt.

Text normalisation (dalle-mini's `normalize_text`: ftfy, unidecode, lowercase, URL/HTML clean-up, ...) is not
done here; callers normalise captions the way the model was trained (dalle's `text.normalize_caption`).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import seqio
import tensorflow as tf

BART_BOS, BART_PAD, BART_EOS, BART_UNK = 0, 1, 2, 3


def _swap(i: int) -> int:
    """BART id <-> dalle id (an involution: 0 <-> 1)."""
    return 1 - i if i in (0, 1) else i


class PythonVocabulary(seqio.Vocabulary):
    """A seqio vocabulary whose tokenizer is Python (the `tokenizers` library): the tf.data side wraps the
    subclass's `_encode` / `_decode` in tf.py_function (BPE here, WordPiece in dalle/tokenizers/wordpiece.py)."""

    def _encode_tf(self, s):
        def enc(x):
            return tf.constant(self._encode(x.numpy().decode("utf-8")), tf.int32)

        out = tf.py_function(enc, [s], tf.int32)
        out.set_shape([None])
        return out

    def _decode_tf(self, ids):
        def dec(x):
            return tf.constant(self._decode(x.numpy().tolist()))

        out = tf.py_function(dec, [ids], tf.string)
        out.set_shape([])
        return out


class BpeVocabulary(PythonVocabulary):
    """A byte-level BPE (`tokenizer.json`, or `vocab.json` + `merges.txt`) with dalle's pad-0 id layout."""

    def __init__(self, path: str, extra_ids: int = 0):
        from tokenizers import Tokenizer

        self.path = path
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        tok_json = path if path.endswith(".json") and os.path.isfile(path) else os.path.join(directory, "tokenizer.json")
        if os.path.isfile(tok_json) and os.path.basename(tok_json) == "tokenizer.json":
            self._tok = Tokenizer.from_file(tok_json)
        elif os.path.isfile(os.path.join(directory, "vocab.json")) and os.path.isfile(os.path.join(directory,
                                                                                                  "merges.txt")):
            from tokenizers import decoders, models, pre_tokenizers

            model = models.BPE.from_file(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))
            self._tok = Tokenizer(model)
            self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            self._tok.decoder = decoders.ByteLevel()
        else:
            raise FileNotFoundError(f"{path!r}: no tokenizer.json, nor vocab.json + merges.txt (a dalle-mini "
                                    f"checkpoint directory has them)")
        specials = {"<s>": BART_BOS, "<pad>": BART_PAD, "</s>": BART_EOS, "<unk>": BART_UNK}
        for token, want in specials.items():
            got = self._tok.token_to_id(token)
            if got != want:
                raise ValueError(f"{path!r}: {token} has id {got}, expected BART's {want}")
        self._size = self._tok.get_vocab_size(with_added_tokens=True)
        super().__init__(extra_ids=extra_ids)

    # --- seqio.Vocabulary -------------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return BART_EOS

    @property
    def unk_id(self) -> int:
        return BART_UNK

    @property
    def bos_id(self) -> int:
        return _swap(BART_BOS)

    @property
    def _base_vocab_size(self) -> int:
        return self._size

    def _encode(self, s: str) -> Sequence[int]:
        ids = self._tok.encode(s, add_special_tokens=False).ids
        return [self.bos_id] + [_swap(i) for i in ids]

    def _decode(self, ids: Iterable[int]) -> str:
        special = {0, 1, BART_EOS}
        bart = [_swap(int(i)) for i in ids if int(i) not in special]
        return self._tok.decode(bart, skip_special_tokens=True)

    def __eq__(self, other):
        return isinstance(other, BpeVocabulary) and other.path == self.path


def train_tiny_bpe(texts: Sequence[str], directory: str, vocab_size: int = 300) -> str:
    """A tiny BART-layout byte-level BPE (specials <s>, <pad>, </s>, <unk> at 0-3) for tests; returns the dir."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(directory, exist_ok=True)
    tok.save_model(directory)
    tok.save(os.path.join(directory, "tokenizer.json"))
    return directory
