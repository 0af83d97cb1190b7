"""Caption normalization, shared by tokenizer training, the seqio tasks and generation prompts.

Captions scraped from the web (CC3M, CC12M, LAION) carry mojibake ("cafÃ©"), HTML entities, odd unicode
(full-width letters, ligatures, non-breaking spaces, zero-width characters) and ragged whitespace. The tokenizer
must see the same text at training time and at prompt time, so every path goes through `normalize_caption`,
modelled on dalle-mini's `TextNormalizer` (ftfy, unicode folding, lowercasing, whitespace) but without its
emoji/hashtag/wiki rules, which only matter for its particular crawl. A converted dalle-mini model uses dalle-mini's
own rules instead, exactly (`data.text_normalizer = "dalle_mini"`, dalle/data/dalle_mini_text.py).

`ftfy` (pip `ftfy`) does the mojibake repair when installed; without it a built-in repair handles the common
case of UTF-8 bytes decoded as cp1252/latin-1, so the module never fails to import.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
import unicodedata
import warnings

try:  # optional but recommended: the reference repair of mojibake
    import ftfy as _ftfy
except ImportError:  # pragma: no cover - exercised only where ftfy is absent
    _ftfy = None

_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00c5\u00e2\u00c4\u00c6\u00d0\u00d1][\u0080-\u00ff\u0152-\u2122]")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_HTML_TAG = re.compile(r"<[^<>]{1,200}>")
_URL = re.compile(r"(https?://|www\.)\S+", re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_REPEATED_PUNCT = re.compile(r"([!?,;:\-_*~=])\1{2,}")
_LONG_ELLIPSIS = re.compile(r"\.{4,}")

# Typographic characters folded to their ASCII look-alikes (NFKC leaves these alone).
_FOLD = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-",
    "\u2026": "...", "\u00a0": " ", "\u2022": " ", "\u00b7": " ",
})


# `data.text_normalizer`: which normalizer captions and prompts go through.
#   caption     this module's cleaner (dalle's own models), driven by the options below;
#   dalle_mini  dalle-mini's TextNormalizer, exactly (dalle/data/dalle_mini_text.py; a converted dalle-mini whose
#               config.json says normalize_text: true); the options below other than word_frequency_path are unused;
#   none        the text as given (a converted dalle-mini with normalize_text: false: its processor tokenizes the
#               raw prompt, case and all).
NORMALIZERS = ("caption", "dalle_mini", "none")


@dataclasses.dataclass(frozen=True)
class NormalizerOptions:
    """What `normalize_caption` does; the defaults match `data.lowercase=True` and dalle-mini's behaviour."""

    lowercase: bool = True
    ascii_fold: bool = False  # also strip accents ("café" -> "cafe"), like dalle-mini's unidecode step
    remove_urls: bool = True
    remove_html: bool = True
    max_chars: int = 0  # > 0: cut very long captions (bounded tokenizer time on web crawls)
    normalizer: str = "caption"  # one of NORMALIZERS
    word_frequency_path: str = ""  # dalle_mini: its hashtag word list ("" = hashtags left unsplit, one warning)
    # dalle_mini without the `dalle-mini` extra installed: False raises (training, encoding: never on other text
    # than the run's); True (prompts for drawing) falls back to the caption cleaner with one warning.
    fallback_without_extra: bool = False

    def __post_init__(self):
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"data.text_normalizer = {self.normalizer!r} is not one of {', '.join(NORMALIZERS)}")


def fix_mojibake(text: str) -> str:
    """Undoes UTF-8 text that was decoded as cp1252/latin-1 (ftfy when installed, else a round-trip repair)."""
    if _ftfy is not None:
        return _ftfy.fix_text(text, normalization="NFC")
    return _fallback_fix(text)


def _fallback_fix(text: str) -> str:
    for _ in range(3):  # doubly-encoded text needs two passes
        if not _MOJIBAKE_HINT.search(text):
            break
        fixed = None
        for enc in ("cp1252", "latin-1"):
            try:
                fixed = text.encode(enc).decode("utf-8")
                break
            except (UnicodeEncodeError, UnicodeDecodeError):
                continue
        if fixed is None or fixed == text:
            break
        text = fixed
    return text


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_caption(text: str | bytes, options: NormalizerOptions = NormalizerOptions()) -> str:
    """One caption, cleaned: mojibake and HTML entities repaired, unicode folded (NFKC + typographic quotes and
    dashes), URLs and tags dropped, control characters removed, whitespace collapsed, optionally lowercased.

    Idempotent: normalizing twice gives the same string (tested), so normalized captions may be stored.
    `options.normalizer` other than "caption" hands the text to that normalizer instead (see NORMALIZERS).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if options.normalizer != "caption":
        return _other_normalizer(text, options)
    if options.max_chars > 0:
        text = text[: options.max_chars * 2]
    text = fix_mojibake(text)
    text = html.unescape(html.unescape(text))  # "&amp;quot;" is common in crawls
    if options.remove_html:
        text = _HTML_TAG.sub(" ", text)
    if options.remove_urls:
        text = _URL.sub(" ", text)
    text = _ZERO_WIDTH.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    text = text.translate(_FOLD)
    if options.ascii_fold:
        text = _strip_accents(text)
    # Control and unassigned characters become spaces (tabs/newlines included).
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    text = _LONG_ELLIPSIS.sub("...", text)
    if options.lowercase:
        text = text.lower()
    text = _SPACES.sub(" ", text).strip()
    if options.max_chars > 0 and len(text) > options.max_chars:
        text = text[: options.max_chars].rstrip()
    return text


def _other_normalizer(text: str, options: NormalizerOptions) -> str:
    """`none` and `dalle_mini`. The empty caption stays empty under both: it is the unconditional prompt, which
    dalle-mini tokenizes unnormalized ("<s></s>"; its processor's `input_ids_uncond`, and its training blanks
    captions after normalizing them)."""
    if options.normalizer == "none" or not text:
        return text
    from dalle.data import dalle_mini_text

    if not options.fallback_without_extra:
        return dalle_mini_text.normalizer(options.word_frequency_path)(text)
    missing = _missing_extra()
    if not missing:
        return dalle_mini_text.normalizer(options.word_frequency_path)(text)
    # A plain install still draws, with a near-miss normalization (one warning per process).
    _warn_once(f"{missing}; until then prompts go through dalle's own caption cleaner (lowercased, accents "
               f"folded), close to dalle-mini's for plain English text but not the token ids it was trained on")
    return normalize_caption(text, dataclasses.replace(options, normalizer="caption", lowercase=True,
                                                       ascii_fold=True))


@functools.lru_cache(maxsize=1)
def _missing_extra() -> str:
    """Why dalle-mini's normalizer cannot run here ("" when it can), checked once per process."""
    from dalle.data import dalle_mini_text

    try:
        dalle_mini_text._libraries()
    except dalle_mini_text.MissingExtraError as e:
        return str(e)
    return ""


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def options_from_config(data_config, for_prompts: bool = False) -> NormalizerOptions:
    """Normalizer options from the `data` config section (keys `lowercase`, `ascii_fold`, `max_caption_chars`,
    `text_normalizer`, `word_frequency_path`; for dalle_mini without the last, dalle-mini's
    enwiki-words-frequency.txt is looked for beside the tokenizer files, where `dalle convert dalle-mini` puts it).
    `for_prompts`: text to draw from, which may fall back when the dalle-mini extra is missing (see NormalizerOptions)."""
    normalizer = str(data_config.get("text_normalizer", "caption") or "caption")
    word_frequency = str(data_config.get("word_frequency_path", "") or "")
    if normalizer == "dalle_mini" and not word_frequency:
        from dalle.data import dalle_mini_text

        word_frequency = dalle_mini_text.find_word_frequency(str(data_config.get("tokenizer_path", "") or ""))
    return NormalizerOptions(
        lowercase=bool(data_config.get("lowercase", True)),
        ascii_fold=bool(data_config.get("ascii_fold", False)),
        max_chars=int(data_config.get("max_caption_chars", 0)),
        normalizer=normalizer,
        word_frequency_path=word_frequency,
        fallback_without_extra=for_prompts,
    )
