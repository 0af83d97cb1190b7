"""Caption normalization (dalle.data.text)."""

import pytest

from dalle.data import text


@pytest.mark.parametrize("raw, expected", [
    ("A  Red\tSquare\n", "a red square"),
    ("cafÃ© au lait", "café au lait"),  # UTF-8 read as cp1252
    ("Ã¢â‚¬Å“quotedÃ¢â‚¬Â\x9d", '"quoted"'),  # doubly mis-decoded curly quotes
    ("fish &amp; chips &lt;3", "fish & chips <3"),
    ("ｆｕｌｌ－ｗｉｄｔｈ ﬁne", "full-width fine"),  # NFKC folding, ligature
    ("smart “quotes” and ‘apostrophes’ — dash…", "smart \"quotes\" and 'apostrophes' - dash..."),
    ("zero\u200bwidth\u00a0space", "zerowidth space"),
    ("see https://example.com/x.jpg now <b>bold</b>", "see now bold"),
    ("wow!!!!! .... ok...", "wow! ... ok..."),
    ("", ""),
])
def test_normalize(raw, expected):
    assert text.normalize_caption(raw) == expected


def test_options():
    assert text.normalize_caption("Café CAT", text.NormalizerOptions(lowercase=False)) == "Café CAT"
    assert text.normalize_caption("Café CAT", text.NormalizerOptions(ascii_fold=True)) == "cafe cat"
    assert text.normalize_caption("one two three four", text.NormalizerOptions(max_chars=8)) == "one two"
    assert text.normalize_caption(b"bytes \xc3\xa9") == "bytes é"


def test_fallback_fix_without_ftfy():
    assert text._fallback_fix("cafÃ© crÃ¨me") == "café crème"
    assert text._fallback_fix("plain ascii") == "plain ascii"
    assert text._fallback_fix("déjà vu") == "déjà vu"  # correct text is left alone


def test_idempotent():
    samples = ["cafÃ© &amp; “bar”", "  Big   DOG!!!  ", "ｆｕｌｌ ﬁ", "x\u200by https://a.b c"]
    for s in samples:
        once = text.normalize_caption(s)
        assert text.normalize_caption(once) == once


def test_options_from_config():
    from ml_collections import ConfigDict

    o = text.options_from_config(ConfigDict({"lowercase": False, "ascii_fold": True, "max_caption_chars": 5}))
    assert o == text.NormalizerOptions(lowercase=False, ascii_fold=True, max_chars=5)
