"""OpenAI CLIP's byte-level BPE tokenizer (`simple_tokenizer.py` of github.com/openai/CLIP), standard library only."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


class OpenAIBPETokenizer:
    """OpenAI CLIP's byte-level BPE (simple_tokenizer.py) from `bpe_simple_vocab_16e6.txt.gz`, written with the
    standard library: `\\p{L}`/`\\p{N}` become `[^\\W\\d_]`/`\\d`, and ftfy's mojibake repair is skipped (html
    unescape + whitespace cleanup are kept), so exotic text may tokenize slightly differently from OpenAI's."""

    def __init__(self, bpe_path: str, context_length: int = 77):
        import gzip
        import re

        if not os.path.isfile(bpe_path):
            raise FileNotFoundError(f"model.tokenizer_path {bpe_path!r} (bpe_simple_vocab_16e6.txt.gz) does not exist")
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
            list(range(ord("®"), ord("ÿ") + 1))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, map(chr, cs)))
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
        vocab.extend(["<|startoftext|>", "<|endoftext|>"])
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder["<|startoftext|>"], self.encoder["<|endoftext|>"]
        self.context_length = context_length
        self.pat = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|"
                              r"(?:[^\s\w]|_)+", re.IGNORECASE)
        self.cache: dict[str, str] = {}

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        import html

        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids = []
        for tok in self.pat.findall(text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(tok).split(" "))
        return ids

    def __call__(self, captions: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(captions), self.context_length), np.int32)
        for i, c in enumerate(captions):
            ids = [self.sot] + self.encode(c)[: self.context_length - 2] + [self.eot]
            out[i, : len(ids)] = ids
        return out
