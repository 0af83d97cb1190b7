"""dalle-mini's prompt path, reproduced: normalized strings, BART token ids + mask, and greedy image codes at
condition scale 1 and 3, against golden answers dalle-mini 0.1.5 made in its own venv from one directory
(tests/fixtures/dalle_mini_text, tools/make_text_normalizer_fixtures.py). Needs no peer venv: only the fixture."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import json
import os
import random
import shutil
import warnings
from importlib.metadata import version

import jax
import numpy as np
import pytest

from dalle import cli, generation
from dalle import model_dir as checkpoint
from dalle.data import dalle_mini_text, tasks, text
from dalle.modeling import sampling
from dalle.tokenizers import bart_bpe
from tests import published_layouts as layouts

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "dalle_mini_text")
WORDS = os.path.join(FIXTURE, dalle_mini_text.WORD_FREQUENCY_FILE)
with open(os.path.join(FIXTURE, "golden.json"), encoding="utf8") as _f:
    GOLDEN = json.load(_f)
ROWS = GOLDEN["prompts"]
PROMPTS = [r["prompt"] for r in ROWS]
LENGTH = GOLDEN["max_text_length"]


def ours(bart_ids) -> np.ndarray:
    """dalle-mini's BART ids (<s>=0, <pad>=1) -> ours (pad 0, <s> 1): the converter's swap."""
    a = np.asarray(bart_ids)
    return np.where(a == 0, 1, np.where(a == 1, 0, a)).astype(np.int32)


def normalize(row) -> str:
    """Our normalizer on a golden row, "<person>" drawing from the seed dalle-mini's run used."""
    return dalle_mini_text.normalizer(WORDS)(row["prompt"], random.Random(row["seed"]))


def test_fixture_covers_the_rules_and_was_made_with_the_installed_releases():
    assert len(ROWS) >= 200 and len(set(PROMPTS)) == len(PROMPTS)
    for needle in ("&amp;", "http", "<b>", "#", "<person>", "🐶", "é", "東京", "Москва", "\t", "1,000", "'s"):
        assert any(needle in p for p in PROMPTS), needle
    assert sum(r["normalized"].strip() != r["prompt"].strip() for r in ROWS) > len(ROWS) // 2  # not vacuous
    v = GOLDEN["versions"]
    assert v["dalle-mini"] == "0.1.5"
    # Emoji names and transliterations change between releases: the pins are the releases that made the fixture.
    installed = {"unidecode": version("Unidecode"), "emoji": version("emoji"), "ftfy": version("ftfy")}
    assert installed == {k: v[k] for k in installed}, "install the pinned `dalle[dalle-mini]` extra"
    root = os.path.dirname(os.path.dirname(__file__))
    reqs = open(os.path.join(root, "requirements.txt")).read()
    assert f"Unidecode=={v['unidecode']}" in reqs and f"emoji=={v['emoji']}" in reqs
    pyproject = open(os.path.join(root, "pyproject.toml")).read()
    assert f'"Unidecode=={v["unidecode"]}"' in pyproject and f'"emoji=={v["emoji"]}"' in pyproject


def test_normalized_strings_equal_dalle_minis_for_every_prompt():
    wrong = [(r["prompt"], normalize(r), r["normalized"]) for r in ROWS if normalize(r) != r["normalized"]]
    assert not wrong, f"{len(wrong)} of {len(ROWS)} differ, e.g. {wrong[:5]}"


@pytest.mark.parametrize("prompt, want", [
    ("#sunsetbeach", " sunset beach"),  # hashtag split with the word list
    ("beautiful #newyorkcity skyline", " beautiful new york city skyline"),
    ("#3dart", " 3d art"),
    ("Tom &amp; Jerry", " tom & jerry"),
    ("a dog 🐶 on the beach 🏖️", " a dog, dog face, on the beach, beach with umbrella"),
    ("Café—crème brûlée & croissants (Paris, 2019)", " cafe, creme brulee & croissants, paris, 2019"),
    ("1,000,000 dollars", " 1000000 dollars"),
    ("3.14159 is pi", " 3.14159 is pi"),
    ("12/25/2020 christmas", " 12/25/2020 christmas"),
    ("rock 'n' roll", ' rock " n " roll'),
    ("dog's bone", " dog's bone"),
    ("see https://www.example.org/path?query=1&b=2 for details", " see for details"),
    ("<b>bold</b> statement", " bold statement"),
    ("[1] the first reference", " the first reference"),
    ("sooooo cute", " so cute"),
    ("北京烤鸭", " bei jing kao ya"),
    ("<person> and <person> at the beach", " people at the beach"),
    ("donâ€™t", " don't"),
    ("", " "),
])
def test_rules_that_change_the_string(prompt, want):
    """A handful checked by hand (and in the fixture): each would fail if its rule were missing or wrong."""
    row = next(r for r in ROWS if r["prompt"] == prompt)
    assert row["normalized"] == want
    assert normalize(row) == want


def test_person_tags_draw_from_pythons_random_like_dalle_mini():
    row = next(r for r in ROWS if r["prompt"] == "<PERSON> riding a bike")
    random.seed(row["seed"])
    assert dalle_mini_text.normalizer(WORDS)(row["prompt"]) == row["normalized"]  # global random, seeded
    draws = {dalle_mini_text.normalizer(WORDS)("<person>", random.Random(s)) for s in range(60)}
    assert draws == {f" {w}" for w in dalle_mini_text.PERSON_WORDS}


def test_without_the_word_list_only_hashtags_change_and_a_warning_says_so_once(monkeypatch):
    monkeypatch.setattr(dalle_mini_text, "_warned_no_words", False)
    bare = dalle_mini_text.DalleMiniNormalizer("")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for r in ROWS:
            if "#" not in r["prompt"]:
                assert bare(r["prompt"], random.Random(r["seed"])) == r["normalized"], r["prompt"]
    with pytest.warns(UserWarning, match="enwiki-words-frequency.txt"):
        assert bare("#sunsetbeach #summer_vibes") == " sunsetbeach summer vibes"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bare("#newyorkcity") == " newyorkcity"  # warned once only


def test_bad_word_list_and_missing_extra_are_named(tmp_path, monkeypatch):
    blank = tmp_path / "words.txt"
    blank.write_text("the 10\n\nof 5\n")
    with pytest.raises(ValueError, match="line 2 is blank"):
        dalle_mini_text.WordSplitter(str(blank))
    with pytest.raises(ValueError, match="cannot be read"):
        dalle_mini_text.WordSplitter(str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="text_normalizer = 'dalle-mini' is not one of"):
        text.NormalizerOptions(normalizer="dalle-mini")
    from dalle import config as config_lib
    from dalle.data import schema

    assert schema.TEXT_NORMALIZERS == text.NORMALIZERS
    data = config_lib.validate(config_lib.ConfigDict({"data": {"source": "shapes"}})).data
    assert (data.text_normalizer, data.word_frequency_path) == ("caption", "")
    with pytest.raises(config_lib.ConfigError, match="data.text_normalizer = 'dalle-mini' is not one of"):
        config_lib.validate(config_lib.ConfigDict({"data": {"source": "shapes", "text_normalizer": "dalle-mini"}}))
    monkeypatch.setitem(__import__("sys").modules, "unidecode", None)  # as if not installed
    dalle_mini_text._libraries.cache_clear()
    try:
        with pytest.raises(dalle_mini_text.MissingExtraError, match=r"unidecode.*pip install 'dalle\[dalle-mini\]'"):
            dalle_mini_text.DalleMiniNormalizer(WORDS)
        # A converted model still draws on a plain install: dalle's own cleaner, with one warning naming the extra;
        # training and encoding (no fallback asked) still refuse.
        text._missing_extra.cache_clear()
        text._warn_once.cache_clear()
        options = text.NormalizerOptions(normalizer="dalle_mini", lowercase=False, fallback_without_extra=True)
        with pytest.warns(UserWarning, match=r"dalle\[dalle-mini\].*caption cleaner"):
            assert text.normalize_caption("Café  AU Lait", options) == "cafe au lait"
        with pytest.raises(dalle_mini_text.MissingExtraError):
            text.normalize_caption("Café", text.NormalizerOptions(normalizer="dalle_mini"))
        assert text.options_from_config({"text_normalizer": "dalle_mini"}, for_prompts=True).fallback_without_extra
    finally:
        text._missing_extra.cache_clear()
        dalle_mini_text._libraries.cache_clear()


def test_our_own_caption_normalizer_is_unchanged_and_differs():
    """Our models' normalizer is still the default, and the fixture tells the two apart (the test would fail if
    `dalle_mini` fell back to it)."""
    assert text.options_from_config({}).normalizer == "caption"
    assert text.normalize_caption("  Café &amp; <b>Crème</b>  ") == "café & crème"
    differ = sum(text.normalize_caption(r["prompt"]) != r["normalized"] for r in ROWS)
    assert differ > len(ROWS) // 2


def _vocab_layouts(tmp_path):
    """The fixture's tokenizer as published (tokenizer.json) and as vocab.json + merges.txt only."""
    bare = tmp_path / "bpe"
    bare.mkdir()
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(FIXTURE, f), bare)
    return {"tokenizer.json": bart_bpe.BpeVocabulary(FIXTURE), "vocab+merges": bart_bpe.BpeVocabulary(str(bare))}


def test_token_ids_and_mask_equal_dalle_minis_processor(tmp_path):
    options = text.options_from_config({"text_normalizer": "dalle_mini", "tokenizer_path": FIXTURE})
    assert options.word_frequency_path == WORDS  # found beside the tokenizer files
    raw = text.options_from_config({"text_normalizer": "none", "tokenizer_path": FIXTURE})
    want = ours([r["input_ids"] for r in ROWS])
    want_raw = ours([r["raw_input_ids"] for r in ROWS])
    # The one exception by design: "" is our unconditional caption (dalle-mini's processor tokenizes it
    # unnormalized, "<s></s>"), while dalle-mini's normalizer makes " " of a user's empty prompt.
    kept = [i for i, p in enumerate(PROMPTS) if p != ""]
    for name, vocab in _vocab_layouts(tmp_path).items():
        got = np.zeros_like(want)
        for i in kept:  # seeded per prompt, as the fixture was made (only "<person>" prompts draw)
            random.seed(ROWS[i]["seed"])
            got[i] = tasks.encode_captions([PROMPTS[i]], vocab, LENGTH, options)[0]
        bad = [PROMPTS[i] for i in kept if (got[i] != want[i]).any()]
        assert not bad, f"{name}: {len(bad)} prompts tokenize differently, e.g. {bad[:5]}"
        np.testing.assert_array_equal((got[kept] != 0).astype(int), np.asarray([ROWS[i]["attention_mask"]
                                                                                 for i in kept]))
        got_raw = tasks.encode_captions(PROMPTS, vocab, LENGTH, raw)
        np.testing.assert_array_equal(got_raw, want_raw, err_msg=f"{name}: normalize_text false")
        np.testing.assert_array_equal((got_raw != 0).astype(int), [r["raw_attention_mask"] for r in ROWS])
        blank = tasks.encode_captions([""], vocab, LENGTH, options)[0]
        np.testing.assert_array_equal(blank, ours(GOLDEN["uncond_input_ids"]))  # its input_ids_uncond
        spaced = [vocab.bos_id] + list(vocab.encode(" "))[1:] + [vocab.eos_id]
        assert list(want[PROMPTS.index("")][:len(spaced)]) == spaced


def _source(tmp_path) -> str:
    """The fixture as a downloaded dalle-mini directory, with a tiny vqgan-jax VQGAN (40 codes, 4x4) beside it."""
    src = str(tmp_path / "downloads" / "dalle-mini")
    shutil.copytree(FIXTURE, src, ignore=shutil.ignore_patterns("golden.json"))
    layouts.write_vqgan_jax_dir(str(tmp_path / "downloads" / "vqgan"), layouts.random_taming_state_dict(
        layouts.TINY_VQGAN), layouts.TINY_VQGAN)
    return src


def _check_codes(gen: generation.Generator, rows) -> None:
    prompts = [r["prompt"] for r in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some prompts are truncated, as dalle-mini truncates them
        tokens = gen.tokenize(prompts).tokens
        np.testing.assert_array_equal(tokens, ours([r["input_ids"] for r in rows]))
        for scale, key in ((1.0, "scale1"), (3.0, "scale3")):
            codes = gen.codes(prompts, condition_scale=scale, temperature=0.0)
            want = np.asarray([r[key] for r in rows])
            same = (codes == want).all(axis=1)
            assert same.all(), (f"scale {scale}: {int((~same).sum())} of {len(rows)} prompts decode differently, "
                                f"e.g. {[prompts[i] for i in np.flatnonzero(~same)[:5]]}")


def _generatable(rows):
    """The prompts our Generator accepts (it refuses prompts that normalize to nothing), without "<person>"
    (random: its draws are checked in the token test)."""
    return [r for r in rows if r["normalized"].strip() and "person>" not in r["prompt"].lower()]


def test_converted_model_generates_dalle_minis_codes_at_scale_1_and_3(tmp_path, capsys):
    src = _source(tmp_path)
    out = tmp_path / "converted"
    assert cli.main(["convert", "dalle-mini", "--from", src, "--out", str(out)]) == 0, capsys.readouterr().err
    data = checkpoint.read_config(str(out)).data
    assert data.text_normalizer == "dalle_mini"  # config.json says normalize_text: true
    assert (out / "tokenizer" / dalle_mini_text.WORD_FREQUENCY_FILE).is_file()
    shutil.rmtree(tmp_path / "downloads")  # the converted directory stands alone
    gen = generation.Generator.from_checkpoint(str(out))
    rows = _generatable(ROWS)
    assert len(rows) >= 200
    _check_codes(gen, rows)


def test_raw_directory_converted_in_memory_generates_the_same(tmp_path):
    src = _source(tmp_path)
    gen = generation.Generator.from_pretrained(src)
    assert gen.config.data.text_normalizer == "dalle_mini"
    _check_codes(gen, [r for r in _generatable(ROWS) if "#" in r["prompt"] or "&" in r["prompt"]][:40])


def test_every_prompt_decodes_dalle_minis_codes_from_our_tokens(tmp_path):
    """All prompts, the empty-ish ones our Generator refuses included: our normalizer + BPE tokens, our sampler,
    dalle-mini's unconditional prompt from our Generator."""
    src = _source(tmp_path)
    gen = generation.Generator.from_pretrained(src)
    vocab = gen.vocab
    tokens = np.zeros((len(ROWS), LENGTH), np.int32)
    for i, r in enumerate(ROWS):
        ids = list(vocab.encode(normalize(r)))[: LENGTH - 1] + [vocab.eos_id]
        tokens[i, :len(ids)] = ids
    np.testing.assert_array_equal(tokens, ours([r["input_ids"] for r in ROWS]))
    uncond = gen.unconditional(len(ROWS))
    np.testing.assert_array_equal(uncond[0], ours(GOLDEN["uncond_input_ids"]))
    for scale, key in ((1.0, "scale1"), (3.0, "scale3")):
        codes = sampling.generate(gen.model, gen.params, tokens, jax.random.PRNGKey(0), condition_scale=scale,
                                  temperature=0.0, uncond_tokens=uncond)
        np.testing.assert_array_equal(np.asarray(codes), [r[key] for r in ROWS], err_msg=f"scale {scale}")


def test_normalize_text_false_tokenizes_the_raw_prompt(tmp_path):
    """dalle-mini's processor with normalize_text false: no normalization at all (case kept)."""
    src = _source(tmp_path)
    doc = json.load(open(os.path.join(src, "config.json")))
    doc["normalize_text"] = False
    json.dump(doc, open(os.path.join(src, "config.json"), "w"))
    gen = generation.Generator.from_pretrained(src)
    assert gen.config.data.text_normalizer == "none"
    rows = [r for r in ROWS if r["prompt"].strip()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens = gen.tokenize([r["prompt"] for r in rows]).tokens
    np.testing.assert_array_equal(tokens, ours([r["raw_input_ids"] for r in rows]))
