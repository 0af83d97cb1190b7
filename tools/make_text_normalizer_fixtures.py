"""Golden fixture for dalle-mini's prompt path, made by the real dalle-mini package: its `TextNormalizer`, its
`DalleBartProcessor` (BART BPE ids + attention mask) and its greedy `generate` at condition scale 1 and 3, for a
few hundred varied prompts, all read back by tests/test_dalle_mini_text.py from one directory.

dalle-mini 0.1.5 needs jax 0.4.13-era APIs, so this runs in the peer venv tools/make_dalle_mini_fixtures.py sets up
(`python tools/make_dalle_mini_fixtures.py --setup`). From the repo root:

    .venv-dallemini/bin/python tools/make_text_normalizer_fixtures.py

It writes tests/fixtures/dalle_mini_text/, a dalle-mini directory as published plus the golden answers:
  * config.json + flax_model.msgpack: a tiny random DalleBart (dalle-mini's own class, `normalize_text: true`,
    seeded init plus noise on every parameter, lm_head columns of the non-code tokens zeroed so its greedy decode
    over all columns picks codes, as ours does) saved with `save_pretrained`;
  * vocab.json, merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json: a byte-level BPE trained
    with HF `tokenizers` on a small corpus and saved by dalle-mini's `DalleBartTokenizer.save_pretrained`;
  * enwiki-words-frequency.txt: a small word-frequency list in the format of the one dalle-mini's
    `HashtagProcessor` downloads from the HF hub ("word count" per line, most frequent first; only the rank
    matters). The hub is unreachable here, so the download is patched to return this file;
  * golden.json: versions (dalle-mini, unidecode, emoji, ftfy, tokenizers, transformers), `max_text_length`, and
    per prompt: `prompt`, `seed` (Python's `random` is seeded with it before normalizing: the "<person>" rule draws
    from it), `normalized` (TextNormalizer), `input_ids` / `attention_mask` (the processor, normalize_text=True),
    `raw_input_ids` / `raw_attention_mask` (the processor with normalize_text=False), and the image codes `scale1`
    (greedy generate) and `scale3` (super-conditioning, do_sample with top_k=1: dalle-mini refuses
    super-conditioning without sampling; top_k=1 is greedy), whose unconditional branch is the processor's
    `input_ids_uncond` (the tokenized empty string, never normalized).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "dalle_mini_text")
WORD_FREQUENCY_FILE = "enwiki-words-frequency.txt"  # the name dalle-mini downloads
SEED_BASE = 1000  # prompt i normalizes with random.seed(SEED_BASE + i)

# config/mini's layout (NormFormer, GLU, scanned), tiny; 40 codes on a 4x4 grid fit tests/published_layouts'
# TINY_VQGAN, so the test can draw images through our Generator. encoder_vocab_size is set to the BPE's size.
MODEL = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
             encoder_ffn_dim=48, decoder_ffn_dim=48, max_text_length=32, image_length=16, image_vocab_size=45,
             decoder_start_token_id=40, bos_token_id=41, pad_token_id=41, eos_token_id=41, dropout=0.0,
             gradient_checkpointing=False, use_scan=True, normalize_text=True)
BPE_SIZE = 420

# Rank order matters (cost = log(rank + 1)); counts are only decoration, as in the real file.
WORDS = """the of and in a to was is for as on by with he it that at from his an were are which this be or has
had first one their its new after but who not they have her she two been other when there all during into school
time may years more most only over city some world would where later up such used many can state about national
out known university united then made these people part year under because team well between film three best
love art photo day night sun sunset sunrise beach sea ocean summer winter spring autumn fall life nature travel
food dog dogs cat cats happy birthday new york london paris tokyo good morning coffee music live dance party
friday weekend vibes goals fitness selfie cute baby family friends red blue green black white yellow pink purple
orange gold silver dark light big small little old young man woman boy girl kid kids tree trees flower flowers
garden house home street road mountain mountains lake river sky cloud clouds rain snow star stars moon space
cake pizza apple apples banana fruit ice cream chocolate car cars bike train plane boat ship fire water earth
wind storm wild life style fashion design photography portrait landscape street art painting drawing sketch
oil canvas digital pixel retro vintage modern future city scape skyline bridge tower castle church temple
throw back thursday monday motivation instagood photooftheday picoftheday follow me like lol omg wow yes no
don't can't it's i'm i've we're you're 's 3d 4k 2022 2023 hd ai robot robots astronaut horse riding
""".split()


def word_frequency_lines() -> list[str]:
    """The fixture's deterministic word-frequency list: first occurrence of each word, counts falling with rank."""
    seen: dict[str, None] = {}
    for w in WORDS:
        seen.setdefault(w, None)
    return [f"{w} {max(1, 5_000_000 // (rank + 1))}" for rank, w in enumerate(seen)]


def prompts() -> list[str]:
    """>= 200 prompts covering what dalle-mini's normalizer rewrites, and plain captions it leaves alone."""
    written = [
        # plain
        "a red circle", "two blue squares", "a small green triangle in the corner", "an astronaut riding a horse",
        "a painting of a fox in the style of starry night", "sunset over the ocean", "a cat wearing a hat",
        "the eiffel tower at night", "a bowl of fruit on a wooden table", "a robot playing chess",
        # upper case
        "A RED APPLE", "Sunset Over The Ocean", "NASA Astronaut On The MOON", "iPhone 12 PRO MAX", "McDonald's",
        "HELLO World", "The Beatles Abbey Road", "TEDx Talk",
        # accents and diacritics
        "café au lait", "crème brûlée", "Ångström and Øresund", "naïve façade", "São Paulo at dawn",
        "Zürich in the snow", "piñata jalapeño", "Dvořák symphony", "Łódź old town", "Ærø island",
        "résumé on a desk", "über cool señorita", "Ça va très bien", "Straße in München",
        # emoji
        "a dog 🐶 on the beach 🏖️", "🍕🍕🍕 pizza party", "love ❤️", "😀", "fire 🔥🔥 and ice ❄️",
        "thumbs up 👍🏽", "family 👨‍👩‍👧‍👦 picnic", "🇫🇷 flag", "rainbow🌈sky", "🙂 smile 🙃",
        "a red apple 🍎 and a green apple 🍏", "✨ magic ✨", "⭐⭐⭐⭐⭐ five stars",
        # URLs
        "a cat http://example.com/cat.jpg", "see https://www.example.org/path?query=1&b=2 for details",
        "www.example.com is a website", "http://a.b", "photo via https://t.co/AbC123", "https://example.com",
        "link:https://foo.bar/baz,qux", "ftp://files.example.com/x.png old file",
        # HTML entities and tags
        "Tom &amp; Jerry", "fish &amp;amp; chips", "&quot;quoted&quot; text", "5 &lt; 6 &gt; 4",
        "caf&eacute; &copy; 2020", "&#39;single&#39; quotes", "non&nbsp;breaking&nbsp;space",
        "<b>bold</b> statement", "<a href=\"http://x.com\">a link</a> here", "line<br/>break", "<p>paragraph</p>",
        "a < b and c > d", "<3 love", "<i>italic <b>nested</b></i>",
        # numbers
        "1,000,000 dollars", "3.14159 is pi", "version 2.0.1 release", "12/25/2020 christmas", "1/2 cup of sugar",
        "100% cotton", "$50 bill", "4 x 4 grid", "2 + 2 = 4", "year 1999", "room 101", "0.5 mm pencil",
        "1,23 euro", "10,000 steps", "9:30 am", "mp3 player", "3d render", "4k wallpaper", "iii and viii",
        "-5 degrees", "v1.2-beta", "1st 2nd 3rd 4th",
        # punctuation
        "hello, world!", "what?!", "wait... what", "yes!!!! no????", "a - b - c", "semi;colon: test",
        "brackets (round) [square] {curly}", "pipe | separated | words", "tilde~and=equals+plus",
        "slash/separated/words", "back\\slash", "under_score_words", "a--b---c", "e-mail and x-ray",
        "well-known self-portrait", "dog's bone", "don't stop", "it's raining", "I'm here", "you'll see",
        "we're done", "they've gone", "he'd go", "rock 'n' roll", "'quoted'", "`backtick`", "\"double\"",
        "“smart quotes”", "‘single smart’", "« guillemets »", "em—dash and en–dash", "ellipsis… here",
        "a * star", "a & b", "50% off", "#", "@user mention", "a.b.c", "U.S.A.", "e.g. this", "Mr. Smith",
        ",leading comma", "trailing comma,", ",,,", "...", "!!!", "???",
        # quotes merged
        "'\"'\" mixed quotes", "\"\"\"triple\"\"\"", "say \"hi\" and 'bye'",
        # hashtags
        "#sunset", "#sunsetbeach", "#throwbackthursday", "#instagood #photooftheday", "#love #art #nature",
        "beautiful #newyorkcity skyline", "#happybirthday", "#dogsofinstagram", "#2022goals", "#3dart",
        "#catlife", "#HelloWorld", "#summer_vibes", "#fridaynight", "#NoFilter", "#oilpainting",
        "#it's", "#don'tstop", "#a.b", "#food #foodporn #yum", "#123", "#x", "##double", "#café",
        # person tokens (CC12M)
        "<PERSON> riding a bike", "<person> and <person> at the beach", "a photo of <person>, <person>",
        "<person> with <person> and <person>", "portrait of <PERSON>",
        # wiki references
        "[1] the first reference", "text with a reference [12]", "middle [3] reference",
        # non-Latin scripts
        "東京の夜", "北京烤鸭", "서울 야경", "Москва зимой", "Αθήνα", "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया",
        "ภาษาไทย", "Ελληνικά και English", "日本語 and English mixed", "Ꮳ cherokee", "ℌ𝔢𝔩𝔩𝔬 fraktur",
        "ｆｕｌｌｗｉｄｔｈ", "ﬁ ligature", "² superscript", "½ half", "Ⅻ roman twelve", "™ ® ©",
        # repeats
        "sooooo cute", "yessss", "aaaaaa", "1111 2222", "zzzz", "!!!!!!", "....", "----", "hmmm",
        # mojibake (ftfy)
        "cafÃ©", "donâ€™t", "Ã¼ber", "naÃ¯ve", "â€œquotedâ€\x9d",
        # whitespace and empty-ish
        "", " ", "   ", "\t", "\n", "a\tb\nc", "  leading and trailing  ", "many     spaces", "\u00a0nbsp\u00a0",
        "zero\u200bwidth", "\u200b", "soft\u00adhyphen", "\r\n", "_", "-", "'", "\"", "()", "[]", "&",
        # mixtures
        "Check out my #NewYork trip!!! 🗽 https://insta.gram/p/123 &amp; more...",
        "<b>SALE</b> 50% OFF!!! Only $9.99 — today’s deal 🎉",
        "“It’s a beautiful day,” said <PERSON>.", "RT @someone: #MondayMotivation 💪 https://t.co/xyz",
        "Café—crème brûlée & croissants (Paris, 2019)", "1,234.56 USD / 5.5 kg", "x-ray of a cat's paw [4]",
        "Mt. Fuji, Japan 🗻 #travel #japan", "a photo of a dog; it's cute!!", "ÉCOLE NORMALE SUPÉRIEURE",
    ]
    # Generated combinations, to reach a few hundred prompts with every rule in many contexts.
    subjects = ["a cat", "The DOG", "an Astronaut", "a café", "two robots", "Tokyo 東京", "a 🐶", "<PERSON>"]
    extras = ["#sunsetbeach", "at 3.5 km/h", "http://x.io/a", "&amp; friends", "in 2020/2021", "(vintage)",
              "— 100% real!!!", "it's 'fine'"]
    generated = [f"{s} {e}" for i, s in enumerate(subjects) for j, e in enumerate(extras) if (i + j) % 2 == 0]
    return written + generated


CORPUS = ["a red circle on a black background", "two blue squares", "a small green triangle in the corner",
          "a painting of a fox", "sunset over the ocean", "an astronaut riding a horse on the moon",
          "a photo of a cat", "new york city skyline at night", "happy birthday cake with candles"]


def _tiny_bpe(directory: str, texts: list[str]) -> None:
    """A BART-layout byte-level BPE trained with HF `tokenizers`, saved as dalle-mini's tokenizer saves itself."""
    from tokenizers import ByteLevelBPETokenizer
    from dalle_mini.model import DalleBartTokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts, vocab_size=BPE_SIZE, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tmp = tempfile.mkdtemp()
    tok.save_model(tmp)
    DalleBartTokenizer.from_pretrained(tmp).save_pretrained(directory)
    shutil.rmtree(tmp)
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path) as f:
        doc = json.load(f)
    doc["name_or_path"] = "dalle_mini_text"  # not the temporary directory's name: the fixture is reproducible
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")


def make(out: str, seed: int = 0) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini imports the old name
    from importlib.metadata import version

    from flax.traverse_util import flatten_dict, unflatten_dict

    from dalle_mini.model import DalleBart, DalleBartConfig, DalleBartProcessor, DalleBartTokenizer
    from dalle_mini.model import text as dm_text

    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    freq_path = os.path.join(out, WORD_FREQUENCY_FILE)
    with open(freq_path, "w", encoding="utf8") as f:
        f.write("\n".join(word_frequency_lines()) + "\n")
    dm_text.hf_hub_download = lambda *a, **k: freq_path  # the hub is unreachable: its file, our copy

    normalizer = dm_text.TextNormalizer()
    all_prompts = prompts()
    normalized = []
    for i, p in enumerate(all_prompts):
        random.seed(SEED_BASE + i)
        normalized.append(normalizer(p))
    _tiny_bpe(out, CORPUS * 3 + normalized + all_prompts)

    tokenizer = DalleBartTokenizer.from_pretrained(out)
    config = DalleBartConfig(**dict(MODEL, encoder_vocab_size=len(tokenizer)))
    lt, li, codes = config.max_text_length, config.image_length, config.decoder_start_token_id
    model = DalleBart(config, input_shape=(1, min(lt, li)), seed=seed, dtype=jnp.float32)  # its init needs lt <= li
    rs = np.random.RandomState(seed)
    flat = flatten_dict(jax.device_get(model.params), sep="/")
    for k, v in sorted(flat.items()):
        v = np.asarray(v, np.float32)
        flat[k] = v + (0.5 if "embed" in k else 0.1) * rs.standard_normal(v.shape).astype(np.float32)
    flat["lm_head/kernel"][:, codes:] = 0.0  # greedy over all columns then picks codes only
    params = unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in flat.items()})
    model.save_pretrained(out, params=params)
    model = DalleBart.from_pretrained(out, dtype=jnp.float32)  # everything below runs from the saved directory
    params = model.params

    processor = DalleBartProcessor.from_pretrained(out)
    assert processor.normalize_text and processor.max_text_length == lt
    raw_processor = DalleBartProcessor(processor.tokenizer, False, lt)
    ids, mask, raw_ids, raw_mask = [], [], [], []
    for i, p in enumerate(all_prompts):
        random.seed(SEED_BASE + i)
        r = processor([p])
        ids.append(np.asarray(r["input_ids"])[0])
        mask.append(np.asarray(r["attention_mask"])[0])
        r = raw_processor([p])
        raw_ids.append(np.asarray(r["input_ids"])[0])
        raw_mask.append(np.asarray(r["attention_mask"])[0])
    ids, mask = np.stack(ids), np.stack(mask)
    check = tokenizer(normalized, padding="max_length", truncation=True, max_length=lt, return_tensors="np")
    assert (check["input_ids"] == ids).all(), "the processor's ids differ from tokenizing its normalized strings"
    uncond = processor([all_prompts[0]])
    uncond_ids = np.repeat(np.asarray(uncond["input_ids_uncond"]), len(all_prompts), axis=0)
    uncond_mask = np.repeat(np.asarray(uncond["attention_mask_uncond"]), len(all_prompts), axis=0)

    greedy = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, params=params,
                            max_length=li + 1).sequences
    scale1_sampled = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=1, params=params,
                                    max_length=li + 1, prng_key=jax.random.PRNGKey(0)).sequences
    scale3 = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=1, params=params,
                            max_length=li + 1, prng_key=jax.random.PRNGKey(0), condition_scale=3.0,
                            input_ids_uncond=uncond_ids, attention_mask_uncond=uncond_mask).sequences
    greedy, scale1_sampled, scale3 = (np.asarray(s)[:, 1:].astype(np.int32) for s in
                                      (greedy, scale1_sampled, scale3))
    assert (greedy == scale1_sampled).all(), "top_k=1 sampling is not greedy"
    for name, seq in (("scale 1", greedy), ("scale 3", scale3)):
        if (seq >= codes).any():
            raise RuntimeError(f"dalle-mini's {name} decode picked a non-code token: {seq[(seq >= codes).any(1)]}")

    golden = {
        "versions": {name: version(dist) for name, dist in (("dalle-mini", "dalle-mini"), ("unidecode", "Unidecode"),
                                                            ("emoji", "emoji"), ("ftfy", "ftfy"),
                                                            ("tokenizers", "tokenizers"),
                                                            ("transformers", "transformers"))},
        "max_text_length": lt, "seed_base": SEED_BASE,
        "uncond_input_ids": uncond_ids[0].tolist(), "uncond_attention_mask": uncond_mask[0].tolist(),
        "prompts": [
            {"prompt": p, "seed": SEED_BASE + i, "normalized": normalized[i], "input_ids": ids[i].tolist(),
             "attention_mask": mask[i].tolist(), "raw_input_ids": raw_ids[i].tolist(),
             "raw_attention_mask": raw_mask[i].tolist(), "scale1": greedy[i].tolist(), "scale3": scale3[i].tolist()}
            for i, p in enumerate(all_prompts)],
    }
    with open(os.path.join(out, "golden.json"), "w", encoding="utf8") as f:
        json.dump(golden, f, ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT, help="fixture directory (replaced)")
    args = parser.parse_args()
    out = make(args.out)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    n = len(prompts())
    print(f"wrote {os.path.relpath(out, ROOT)}: {n} prompts, {size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
