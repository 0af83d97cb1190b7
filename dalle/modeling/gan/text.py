"""Captions and prompts -> sentence-encoder tokens, one way for training and for generation.

The GAN task tokenizes training captions with `CaptionTokenizer.captions` and GANGenerator tokenizes user prompts
with `CaptionTokenizer.prompts`, which checks them first and then calls the same function: the project's
sentencepiece vocabulary, the `data` section's caption normalization, truncation to context_length - 1 plus EOS
(dalle.data.tasks.encode_captions, as the DALL·E data and the shapes CLIP are tokenized).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from ml_collections import ConfigDict


class CaptionTokenizer:
    def __init__(self, vocab: Any, length: int, data: ConfigDict | None = None):
        from dalle.data import text

        self.vocab, self.length = vocab, int(length)
        self.options = text.options_from_config(data if data is not None else ConfigDict())

    @classmethod
    def from_config(cls, config: ConfigDict, tokenizer_path: str = "") -> "CaptionTokenizer":
        """The vocabulary at `tokenizer_path` or data.tokenizer_path, tokens of model.context_length."""
        from dalle.tokenizers import sentencepiece

        data = config.get("data") if "data" in config else None
        path = tokenizer_path or (data.get("tokenizer_path", "") if data is not None else "")
        if not path:
            raise ValueError("no tokenizer: set data.tokenizer_path (the sentencepiece model of the captions)")
        unknown_words = data.get("unknown_words", "keep") if data is not None else "keep"
        return cls(sentencepiece.load_vocabulary(path, unknown_words), config.model.context_length, data)

    def captions(self, captions: Sequence[str]) -> np.ndarray:
        """int32 [N, length], as training sees them."""
        from dalle.data import tasks

        return tasks.encode_captions([str(c) for c in captions], self.vocab, self.length, self.options)

    def prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """User prompts -> tokens like `captions`; a prompt that would reach the model as the empty caption raises
        GenerationError (dalle.generation.check_prompt), a prompt longer than the model reads warns that it was
        truncated."""
        from dalle.data import text
        from dalle.generation import GenerationError, check_prompt

        if isinstance(prompts, str):
            raise GenerationError("prompts must be a list of strings, got one string; wrap it in a list")
        prompts = list(prompts)
        if not prompts:
            raise GenerationError("no prompts given")
        for i, p in enumerate(prompts):
            check_prompt(i, p, self.vocab, self.options)
            if len(self.vocab.encode(text.normalize_caption(p, self.options))) > self.length - 1:
                warnings.warn(f"prompt {i + 1} is longer than the model's {self.length - 1} text tokens and was "
                              f"truncated", stacklevel=3)
        return self.captions(prompts)
