"""Words the vocabulary does not know, left out of the caption (`data.unknown_words = "drop"`).

A word-level vocabulary (the shapes world's ~110 words) turns every word outside it into `<unk>`. People type
such words ("please draw a circle colored red", "bottom-right"), and a model that learned from grammar captions
reads each `<unk>` as more caption: in the multi-object world it drew two or three objects for "a large circle
colored red for me" (EVAL.md, prompts people type). Leaving unknown words out gives the model the words it can
read. A word the vocabulary does not know is first split at punctuation and hyphens ("bottom-right" -> "bottom
right", "blue," -> "blue"), then the parts it still does not know are dropped.

Training captions of a closed world contain no unknown words, so a model trained with "keep" is the same model
under "drop"; with caption noise (`data.caption_unknown_word_prob`) the made-up words are dropped too. The same
vocabulary object serves training (seqio's tokenize, through tf.py_function), prompts, CLIP and the GAN, so every
path reads a caption the same way.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import seqio

from dalle.data.schema import UNKNOWN_WORDS
from dalle.tokenizers.bart_bpe import PythonVocabulary
_CHUNKS = re.compile(r"[^\W_]+[^\w\s]*|[^\w\s]+")  # a run of letters/digits with the punctuation after it
_PARTS = re.compile(r"[^\W_]+|[^\w\s]")  # runs of letters/digits, single punctuation marks
_CACHE_LIMIT = 100_000  # words remembered (prompts of a long-running server, made-up words of caption noise)


class KnownWordsVocabulary(PythonVocabulary):
    """`base` with every caption word it does not know split at punctuation, then dropped if still unknown."""

    def __init__(self, base: seqio.Vocabulary):
        if base.unk_id is None:
            raise ValueError(f"{type(base).__name__} has no unknown-word id: data.unknown_words = 'drop' needs one")
        self.base = base
        self._known: dict[str, bool] = {}
        super().__init__(extra_ids=0)

    def is_known(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            if len(self._known) >= _CACHE_LIMIT:
                self._known.clear()
            known = self._known[word] = self.base.unk_id not in list(self.base.encode(word))
        return known

    def known_text(self, text: str) -> str:
        """`text` with only the words (or word parts) the vocabulary knows, in order, single-spaced. An unknown
        word is tried as chunks that keep a word's trailing punctuation ("bottom-right," -> "bottom-", "right,":
        a word vocabulary may know "right," from its captions), then as bare parts."""
        out = []
        for word in text.split():
            if self.is_known(word):
                out.append(word)
                continue
            for chunk in _CHUNKS.findall(word):
                if self.is_known(chunk):
                    out.append(chunk)
                else:
                    out.extend(p for p in _PARTS.findall(chunk) if self.is_known(p))
        return " ".join(out)

    # --- seqio.Vocabulary: the base vocabulary's ids ------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.base.pad_id

    @property
    def eos_id(self) -> int | None:
        return self.base.eos_id

    @property
    def unk_id(self) -> int | None:
        return self.base.unk_id

    @property
    def _base_vocab_size(self) -> int:
        return self.base.vocab_size

    def _encode(self, s: str) -> Sequence[int]:
        return list(self.base.encode(self.known_text(s)))

    def _decode(self, ids: Iterable[int]) -> str:
        return self.base.decode(ids)

    def __eq__(self, other):
        return isinstance(other, KnownWordsVocabulary) and other.base == self.base


def with_policy(base: seqio.Vocabulary, unknown_words: str) -> seqio.Vocabulary:
    """`base` as `data.unknown_words` says: "keep" (unknown words become `<unk>`) or "drop"."""
    if unknown_words not in UNKNOWN_WORDS:
        raise ValueError(f"data.unknown_words = {unknown_words!r} is not one of {', '.join(UNKNOWN_WORDS)}")
    return base if unknown_words == "keep" else KnownWordsVocabulary(base)
