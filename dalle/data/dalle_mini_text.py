"""dalle-mini's prompt normalization, so a converted dalle-mini/dalle-mega sees the token ids it was trained on.

dalle-mini (config.json `normalize_text: true`) rewrites every caption before its BART BPE sees it: ftfy repair,
HTML entities, emoji spelled out as their names (":dog_face:"), everything transliterated to ASCII (unidecode),
lowercase, CC12M's "<person>" tags replaced, WIT's "[12]" references, HTML tags and URLs dropped, hashtags split
into words with a Wikipedia word-frequency list, most punctuation turned into commas (keeping decimal dots,
dates, "'s"-style apostrophes), quotes and commas merged, and a leading space. This module does the same, rule for
rule, written from what those rules do (tests/test_dalle_mini_text.py compares it with dalle-mini itself on a few
hundred prompts, tests/fixtures/dalle_mini_text made by tools/make_text_normalizer_fixtures.py).

Exact parity needs the same `unidecode` and `emoji` releases dalle-mini's fixture was made with (emoji names and
transliterations change between releases): the optional extra `pip install 'dalle[dalle-mini]'` pins them.
Unidecode is GPL-2.0+, so it is never imported unless this normalizer runs.

The hashtag splitter reads dalle-mini's `enwiki-words-frequency.txt` (one "word count" line per word, most frequent
first; a word costs log(rank + 1)). Without it, prompts with no hashtag are unaffected; a hashtag is kept as one
word (split only at non-alphanumeric characters) and a warning says so once.
"""

from __future__ import annotations

import functools
import html
import math
import os
import random
import re
import warnings
from typing import Callable

EXTRA = "dalle-mini"  # pyproject's optional extra with unidecode + emoji
WORD_FREQUENCY_FILE = "enwiki-words-frequency.txt"  # the file's name in dalle-mini's HF repository

# CC12M's anonymised people: each "<person>" left alone becomes one of these, drawn with these weights (how often
# each occurs in Wikipedia); runs of "<person>" joined by commas/"and" become "people".
PERSON_WORDS = ("a person", "someone", "somebody")
PERSON_WEIGHTS = (282265, 121194, 12219)

# Characters that must survive the punctuation-to-comma rule are parked behind these markers and restored after it.
# The marker text is dalle-mini's: hashtag splitting runs while they are parked, and sees (and splits) their letters.
_MARK = "xtokx"
_DOT, _APOSTROPHE, _SLASH = f"{_MARK}dot{_MARK}", f"{_MARK}quote{_MARK}", f"{_MARK}slash{_MARK}"

_PERSON_RUN = re.compile(r"<person>(?:[,\s]*(?:and)*[,\s]*<person>)+")
_WIKI_REF_START = re.compile(r"\A\s*\[\d+\]")
_WIKI_REF_END = re.compile(r"\[\d+\]\s*\Z")
_HTML_TAG = re.compile(r"<[^<]+?>")
_URL = re.compile(r"http\S+")
_THOUSANDS = re.compile(r"(\d),(\d{3})")
_WORD_DOT = re.compile(r"(\w)\.(\w)")
_CONTRACTION = re.compile(r"'(?=(?:[stdm]|ll|re|ve)\b)")  # 's 't 'd 'm 'll 're 've keep their apostrophe
_DIGIT_SLASH = re.compile(r"(\d)/(\d)")
_WORD_HYPHEN = re.compile(r"(\w)-(\w)")
_SPACED_SYMBOL = re.compile(r"([%&/$*])")
_HASHTAG = re.compile(r"#(\w+)")
_IGNORED = re.compile(r"[_#\\]")
_QUOTE = re.compile(r"['\"`]")
_PUNCTUATION = re.compile(r"[()\[\].,|:;?!=+~\-/{}]")
_REPEATED = re.compile(r"(\D)\1{3,}")  # 4+ times: "viii" keeps its three i's
_QUOTES_RUN = re.compile(r'(?:\s*"+\s*)+')
_COMMAS_RUN = re.compile(r"(?:\s*,+\s*)+")
_SPACES = re.compile(r"\s+")
_HASHTAG_PIECES = re.compile(r"[^a-zA-Z0-9']+")


class MissingExtraError(ImportError):
    """unidecode / emoji (the `dalle-mini` extra) are not installed."""


@functools.lru_cache(maxsize=1)
def _libraries() -> tuple[Callable[[str], str], Callable[[str], str], Callable[[str], str]]:
    """(ftfy.fix_text, emoji.demojize, unidecode), imported on first use (unidecode is GPL: never at import)."""
    missing = []
    try:
        import ftfy
    except ImportError:
        missing.append("ftfy")
    try:
        import emoji
    except ImportError:
        missing.append("emoji")
    try:
        from unidecode import unidecode
    except ImportError:
        missing.append("unidecode")
    if missing:
        raise MissingExtraError(f"dalle-mini's prompt normalization needs {', '.join(missing)}: install the optional "
                                f"extra, pip install 'dalle[{EXTRA}]' (pinned releases: emoji names and "
                                f"transliterations change between versions)")
    return ftfy.fix_text, emoji.demojize, unidecode


class WordSplitter:
    """Splits a run of letters without spaces into the likeliest words (a hashtag: "sunsetbeach" -> "sunset
    beach"): the segmentation whose words have the smallest total cost log(rank + 1) in the word-frequency list,
    unknown words costing infinity; on equal cost the shorter last word wins. "'s" and digits stay attached to
    the piece before them."""

    def __init__(self, path: str):
        try:
            with open(path, encoding="utf8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise ValueError(f"word-frequency file {path!r} cannot be read: {e}") from None
        self.cost: dict[str, float] = {}
        for rank, line in enumerate(lines):
            fields = line.split()
            if not fields:
                raise ValueError(f"word-frequency file {path!r}: line {rank + 1} is blank (each line must be "
                                 f"'word count', most frequent first)")
            self.cost[fields[0]] = math.log(float(rank + 1))  # a repeated word keeps its last rank
        if not self.cost:
            raise ValueError(f"word-frequency file {path!r} is empty")
        self.longest = max(len(w) for w in self.cost)

    def __call__(self, word: str) -> str:
        return " ".join(w for piece in _HASHTAG_PIECES.split(word) for w in self.segment(piece))

    def segment(self, s: str) -> list[str]:
        best = [0.0]  # best[i]: cost of the best segmentation of s[:i]

        def last_word(i: int) -> tuple[float, int]:  # (cost, length) of the best segmentation ending at i
            start = max(0, i - self.longest)
            return min((best[j] + self.cost.get(s[j:i].lower(), math.inf), i - j) for j in range(start, i))

        for i in range(1, len(s) + 1):
            best.append(last_word(i)[0])
        words: list[str] = []  # last word first
        i = len(s)
        while i > 0:
            length = last_word(i)[1]
            piece = s[i - length:i]
            glue = piece != "'" and words and (words[-1] == "'s" or (piece[-1].isdigit() and words[-1][0].isdigit()))
            if glue:
                words[-1] = piece + words[-1]
            else:
                words.append(piece)
            i -= length
        return words[::-1]


_warned_no_words = False


def _unsplit(word: str) -> str:
    """A hashtag's word when there is no word-frequency file: split only at non-alphanumeric characters."""
    global _warned_no_words
    if not _warned_no_words:
        _warned_no_words = True
        warnings.warn(f"dalle-mini prompt normalization: no {WORD_FREQUENCY_FILE} (dalle-mini's word-frequency "
                      f"list, beside its tokenizer files) so hashtags are not split into words as dalle-mini does; "
                      f"copy it into the tokenizer directory or set data.word_frequency_path", stacklevel=4)
    return " ".join(p for p in _HASHTAG_PIECES.split(word) if p)


class DalleMiniNormalizer:
    """A caption -> what dalle-mini's `TextNormalizer` makes of it (a string starting with a space).

    `word_frequency_path`: dalle-mini's enwiki-words-frequency.txt (or one in its format); "" = none (see the
    module docstring). `rng` of a call: where "<person>" draws its replacement; None = Python's global `random`,
    as dalle-mini does (so `random.seed(s)` before both gives the same text)."""

    def __init__(self, word_frequency_path: str = ""):
        self.word_frequency_path = word_frequency_path
        self._split = WordSplitter(word_frequency_path) if word_frequency_path else _unsplit
        _libraries()  # a missing extra fails here, naming it, not at the first prompt

    def __call__(self, text: str, rng: random.Random | None = None) -> str:
        if not isinstance(text, str):
            raise TypeError(f"a caption must be a str, not {type(text).__name__}")
        fix_text, demojize, unidecode = _libraries()
        t = fix_text(text)
        t = html.unescape(html.unescape(t))  # "&amp;quot;" is common in crawls
        t = demojize(t)  # before unidecode, which would drop emoji
        t = unidecode(t).lower()  # from here on the text is ASCII
        t = self._people(t, rng or random)
        t = _WIKI_REF_END.sub("", _WIKI_REF_START.sub("", t))
        t = _HTML_TAG.sub(" ", t)
        t = _URL.sub("", t)
        t = _THOUSANDS.sub(r"\1\2", _THOUSANDS.sub(r"\1\2", t))  # twice: 1,000,000
        t = _WORD_DOT.sub(rf"\1{_DOT}\2", t)
        t = _CONTRACTION.sub(_APOSTROPHE, t)
        t = _DIGIT_SLASH.sub(rf"\1{_SLASH}\2", t)
        t = _WORD_HYPHEN.sub(r"\1 \2", t)
        t = _SPACED_SYMBOL.sub(r" \1 ", t)
        t = _HASHTAG.sub(lambda m: self._split(m.group(1)), t)
        t = _IGNORED.sub(" ", t)
        t = _QUOTE.sub(' " ', t)
        t = _PUNCTUATION.sub(",", t)
        t = t.replace(_DOT, ".").replace(_APOSTROPHE, "'").replace(_SLASH, "/")
        t = _REPEATED.sub(r"\1", t)
        t = _QUOTES_RUN.sub(' " ', t)
        t = _COMMAS_RUN.sub(", ", t)
        t = _SPACES.sub(" ", t).strip()
        if t.endswith(","):
            t = t[:-1]
        if t.startswith(","):
            t = t[1:]
        return " " + t.strip()

    @staticmethod
    def _people(t: str, rng) -> str:
        t = _PERSON_RUN.sub(" people ", t)
        while "<person>" in t:
            t = t.replace("<person>", f" {rng.choices(PERSON_WORDS, PERSON_WEIGHTS)[0]} ", 1)
        return t


@functools.lru_cache(maxsize=8)
def normalizer(word_frequency_path: str = "") -> DalleMiniNormalizer:
    """The normalizer for a word-frequency file, built once (reading the file) and reused."""
    return DalleMiniNormalizer(word_frequency_path)


def find_word_frequency(tokenizer_path: str) -> str:
    """dalle-mini's word-frequency file beside the tokenizer files (`tokenizer_path`: their directory or a file in
    it), where `dalle convert dalle-mini` copies it; "" when there is none."""
    if not tokenizer_path:
        return ""
    folder = tokenizer_path if os.path.isdir(tokenizer_path) else os.path.dirname(tokenizer_path)
    path = os.path.join(folder, WORD_FREQUENCY_FILE)
    return path if os.path.isfile(path) else ""

