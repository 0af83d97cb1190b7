"""The emoji collection: npm pins and integrity, captions, held-out splits, the tfds build (on tiny packages made
here with the packages' layout; no network)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dalle import config as config_lib
from dalle.data import emoji as emoji_lib
from dalle.data import npm
from tests import data_helpers as H


def _examples(config, split):
    from dalle.data import build

    builder = build.load_builder(config.data)
    return list(builder.as_dataset(split=split).as_numpy_iterator())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("emoji"))
    return H.build_tiny_emoji(tmp, corrupt=("1f305.png",))


def test_pin_parsing_names_the_problem():
    pin = npm.PinnedPackage.parse("emoji-datasource-google@16.0.0 sha512-AAAA")
    assert (pin.name, pin.version, pin.tarball_name) == ("emoji-datasource-google", "16.0.0",
                                                         "emoji-datasource-google-16.0.0.tgz")
    assert npm.PinnedPackage.parse("@scope/pkg@1.2.3 sha256-AAAA").tarball_name == "scope-pkg-1.2.3.tgz"
    for bad, word in [("emoji-datasource-google@16.0.0", "name@version"), ("x@latest sha512-AAAA", "exact version"),
                      ("x@1.0.0 md5-AAAA", "integrity"), ("x@1.0.0 sha512-***", "base64")]:
        with pytest.raises(ValueError, match=word):
            npm.PinnedPackage.parse(bad)


def test_cached_tarball_with_wrong_hash_is_refused(tmp_path):
    pin_text = H.write_emoji_package(str(tmp_path), "google", H.emoji_entries(2, 1))
    pin = npm.PinnedPackage.parse(pin_text)
    assert npm.fetch(pin, str(tmp_path)) == str(tmp_path / pin.tarball_name)  # cached: no npm run
    other = npm.PinnedPackage(pin.name, pin.version, "sha512-" + "A" * 86 + "==")
    with pytest.raises(npm.NpmError, match="does not match the pinned"):
        npm.fetch(other, str(tmp_path))


def test_missing_npm_names_the_command(tmp_path):
    pin = npm.PinnedPackage.parse("emoji-datasource-google@16.0.0 sha512-AAAA")
    with pytest.raises(npm.NpmError, match=r"apt-get install -y npm.*npm pack emoji-datasource-google@16.0.0"):
        npm.fetch(pin, str(tmp_path / "cache"), npm="npm-not-installed-here")
    assert not any(f.endswith(".tgz") for f in os.listdir(tmp_path / "cache"))


def test_failing_npm_leaves_nothing(tmp_path):
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'npm ERR! network request failed' >&2\nexit 1\n")
    fake.chmod(0o755)
    pin = npm.PinnedPackage.parse("emoji-datasource-google@16.0.0 sha512-AAAA")
    with pytest.raises(npm.NpmError, match="network request failed.*registry reachable"):
        npm.fetch(pin, str(tmp_path / "cache"), npm=str(fake))
    assert os.listdir(tmp_path / "cache") == []


def test_unlicensed_vendors_are_refused_by_the_config(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="apple.*not licensed"):
        H.emoji_config(str(tmp_path), ["emoji-datasource-apple@16.0.0 sha512-AAAA"])
    with pytest.raises(config_lib.ConfigError, match="emoji_background"):
        H.emoji_config(str(tmp_path), ["emoji-datasource-google@16.0.0 sha512-AAAA"], emoji_background=(0, 300, 0))


def test_captions_follow_the_templates():
    img = emoji_lib.EmojiImage(emoji="1F44D", variant="1F44D-1F3FF", tone="dark", vendor="twitter",
                               name="thumbs up sign", short_names=("+1", "thumbsup"), category="People & Body",
                               subcategory="hand-fingers-closed", image_bytes=b"")
    assert emoji_lib.captions(img, 4) == [
        "thumbs up sign, dark skin tone, twitter style",
        "an emoji of a thumbs up sign with dark skin tone",
        "thumbsup, dark skin tone",
        "people & body: thumbs up sign, dark skin tone, in twitter style",
    ]
    plain = emoji_lib.EmojiImage(emoji="1F34E", variant="1F34E", tone="", vendor="google", name="red apple",
                                 short_names=("apple",), category="Food & Drink", subcategory="food-fruit",
                                 image_bytes=b"")
    assert emoji_lib.captions(plain, 2) == ["red apple, google style", "an emoji of a red apple"]
    assert emoji_lib.tone_of("1F3FB-1F3FF") == "light/dark" and emoji_lib.tone_of("1F3FD-1F3FD") == "medium"
    assert emoji_lib.tone_phrase("light/dark") == "light and dark skin tones"
    assert emoji_lib.tone_of("FE0F") is None


def test_render_composites_onto_the_background():
    png = H.emoji_png("1f300.png", "google")
    white = emoji_lib.render(png, 32, (255, 255, 255))
    black = emoji_lib.render(png, 32, (0, 0, 0))
    assert white.shape == (32, 32, 3) and white.dtype == np.uint8
    assert (white[0, 0] == 255).all() and (black[0, 0] == 0).all()  # transparent corner takes the background
    np.testing.assert_array_equal(white[16, 8], black[16, 8])  # opaque pixels do not


def test_build_splits_are_disjoint_and_hold_out_combinations(built):
    from dalle.data import build

    builder = build.load_builder(built.data)
    meta = builder.info.metadata
    held_tones, held_styles = meta["held_out_tones"], meta["held_out_styles"]
    assert len(held_tones) == 2 and len(held_styles) == 2
    splits = {s: _examples(built, s) for s in ("train", "validation", "zero_shot")}
    keys = {s: {ex["key"].decode() for ex in exs} for s, exs in splits.items()}
    assert not (keys["train"] & keys["validation"]) and not (keys["train"] & keys["zero_shot"])
    assert not (keys["validation"] & keys["zero_shot"])
    for ex in splits["train"]:
        emoji, tone, vendor = ex["emoji"].decode(), ex["skin_tone"].decode(), ex["vendor"].decode()
        assert held_tones.get(emoji) != tone, f"held-out pair {emoji} x {tone} in train"
        assert held_styles.get(emoji) != vendor, f"held-out pair {emoji} x {vendor} in train"
    kinds = {ex["zero_shot_kind"].decode() for ex in splits["zero_shot"]}
    assert kinds == {"skin_tone", "style"}
    # Every held-out emoji is still seen in train (other tones / the other vendor).
    train_emoji = {ex["emoji"].decode() for ex in splits["train"]}
    assert set(held_tones) <= train_emoji and set(held_styles) <= train_emoji
    # A validation rendering's other vendor is in train.
    assert keys["validation"]
    for key in keys["validation"]:
        vendor, variant = key.split("/")
        other = ("twitter" if vendor == "google" else "google") + "/" + variant
        assert other in keys["train"]


def test_build_examples_captions_and_counts(built):
    from dalle.data import build

    train = _examples(built, "train")
    by_key: dict[str, list] = {}
    for ex in train:
        by_key.setdefault(ex["key"].decode(), []).append(ex)
    assert all(sorted(int(e["caption_index"]) for e in group) == [0, 1, 2] for group in by_key.values())
    first = next(e for e in train if e["caption_index"] == 0 and e["skin_tone"])
    assert first["caption"].decode() == (f"{first['name'].decode()}, {first['skin_tone'].decode()} skin tone, "
                                         f"{first['vendor'].decode()} style")
    assert first["image"].shape == (32, 32, 3)
    builder = build.load_builder(built.data)
    stats = builder.info.metadata["build_stats"]
    assert stats["skipped"] == {"unreadable": 2}  # the corrupt PNG in both vendors' packages
    assert "Apache" in builder.info.metadata["attribution"] and "CC-BY 4.0" in builder.info.metadata["attribution"]
    n_images = sum(len(group) for group in by_key.values()) // 3
    total = sum(1 for _ in _examples(built, "validation")) + sum(1 for _ in _examples(built, "zero_shot"))
    # 12 plain + 6x(1 + 5 tones) + 1x(1 + 1) renderings per vendor, minus the corrupt one.
    assert n_images + total // 3 == 2 * (12 + 36 + 2) - 2


@pytest.fixture(scope="module")
def built_with_openmoji(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("openmoji"))
    return H.build_tiny_emoji(tmp, corrupt=("1f305.png",), openmoji=True)


def test_openmoji_is_a_third_style_named_by_emoji_json(built_with_openmoji):
    """OpenMoji's SVGs, drawn by resvg, join the collection under emoji.json's names (FE0F or not), so the
    captions differ only in the style; its own extras and undrawable SVGs are counted, and the splits hold out
    OpenMoji combinations too."""
    from dalle.data import build

    builder = build.load_builder(built_with_openmoji.data)
    meta = builder.info.metadata
    splits = {s: _examples(built_with_openmoji, s) for s in ("train", "validation", "zero_shot")}
    examples = [ex for exs in splits.values() for ex in exs]
    by_vendor: dict[str, set] = {}
    for ex in examples:
        by_vendor.setdefault(ex["vendor"].decode(), set()).add(ex["variant"].decode())
    assert set(by_vendor) == {"google", "twitter", "openmoji"}
    # Every rendering but the corrupt one (its PNG in two packages, its SVG in openmoji) in every style.
    assert by_vendor["openmoji"] == by_vendor["google"] == by_vendor["twitter"]
    assert len(by_vendor["openmoji"]) == 12 + 36 + 2 - 1
    assert "1F300" in by_vendor["openmoji"]  # written 1F300-FE0F by openmoji.json
    first = next(ex for ex in examples if ex["vendor"] == b"openmoji" and ex["caption_index"] == 0
                 and ex["skin_tone"] == b"dark")
    assert first["caption"].decode() == f"{first['name'].decode()}, dark skin tone, openmoji style"
    pixels = first["image"].astype(int)
    assert tuple(pixels[16, 16]) == pytest.approx(H.EMOJI_SKIN_RGB["1F3FF"], abs=8)  # the drawn skin colour
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparency composited onto the background
    assert pixels[16, 4:8].min() < 100  # OpenMoji's black outline survives the resize
    stats = meta["build_stats"]
    assert stats["skipped"] == {"unreadable": 3} and meta["left_out"] == {"openmoji_not_in_emoji_json": 2}
    assert "CC BY-SA 4.0" in meta["attribution"]
    assert {p["vendor"] for p in meta["packages"]} == {"google", "twitter", "openmoji"}
    held_styles = meta["held_out_styles"]
    assert held_styles and set(held_styles.values()) <= {"google", "twitter", "openmoji"}
    for ex in splits["train"]:
        assert held_styles.get(ex["emoji"].decode()) != ex["vendor"].decode()


def test_code_points_join_either_way_round_and_filtered_emoji_are_not_unnamed():
    """FE0F written by emoji.json but not by openmoji.json joins too; an emoji of a category left out by
    data.emoji_categories is dropped, not counted as one emoji.json does not name."""
    named_by = [{"name": "RED HEART", "unified": "2764-FE0F", "category": "Smileys & Emotion"},
                {"name": "DOG FACE", "unified": "1F436", "category": "Animals & Nature"}]
    om = [{"hexcode": "2764"}, {"hexcode": "1F436"}, {"hexcode": "E000"}]
    svgs = {f"{h}.svg": H.openmoji_svg(h) for h in ("2764", "1F436", "E000")}
    unnamed: list[str] = []
    images = list(emoji_lib.openmoji_images(om, svgs, named_by, ["Smileys & Emotion"], unnamed=unnamed))
    assert [(i.variant, i.name) for i in images] == [("2764-FE0F", "red heart")]
    assert unnamed == ["openmoji/E000"]


def test_openmoji_alone_is_refused_by_the_config(tmp_path):
    pin = H.write_openmoji_package(str(tmp_path / "npm"), H.emoji_entries(2, 1))
    with pytest.raises(config_lib.ConfigError, match="openmoji needs an emoji-datasource-<vendor> package"):
        H.emoji_config(str(tmp_path), [pin])
    with pytest.raises(config_lib.ConfigError, match="'emoji-openmoji' is neither"):
        H.emoji_config(str(tmp_path), ["emoji-openmoji@1.0.0 sha512-AAAA"])


def test_an_svg_renders_like_a_png_of_the_same_drawing():
    import io

    from PIL import Image, ImageDraw

    svg = H.openmoji_svg("1F44D-1F3FB")  # a disc of radius 23 in a 72-unit box, skin fill, 2-unit black outline
    image = emoji_lib.render(svg, 32, (255, 255, 255), image_format="svg")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert tuple(image[16, 16].astype(int)) == pytest.approx(H.EMOJI_SKIN_RGB["1F3FB"], abs=8)

    def disc(r: float) -> np.ndarray:
        drawn = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        ImageDraw.Draw(drawn).ellipse((32 - r, 32 - r, 32 + r, 32 + r), fill=H.EMOJI_SKIN_RGB["1F3FB"] + (255,),
                                      outline=(0, 0, 0, 255), width=2)
        buf = io.BytesIO()
        drawn.save(buf, format="PNG")
        return emoji_lib.render(buf.getvalue(), 32, (255, 255, 255)).astype(int)

    same, smaller = (np.abs(image.astype(int) - disc(r)).mean() for r in (23 * 64 / 72, 18 * 64 / 72))
    assert same < 10 and smaller > 2 * same  # the same picture up to edge antialiasing; a smaller disc is not
    with pytest.raises(ValueError):
        emoji_lib.render(b"<svg not closed", 32, (255, 255, 255), image_format="svg")


def test_too_many_held_out_emoji_is_an_error(tmp_path):
    from dalle.data import build

    entries = H.emoji_entries(4, 2)
    pins = [H.write_emoji_package(str(tmp_path / "npm"), v, entries) for v in ("google", "twitter")]
    config = H.emoji_config(str(tmp_path), pins, emoji_zero_shot_tones=3)
    with pytest.raises(emoji_lib.EmojiDataError, match="emoji_zero_shot_tones = 3, but only 2"):
        build.build_dataset(config.data)
    assert not build.make_builder(config.data).is_prepared()  # nothing half-written is taken for a dataset


REAL_CACHE = os.environ.get("DALLE_EMOJI_NPM_CACHE", "outputs/emoji/npm")


def _all_cached() -> bool:
    from dalle.data.sources import emoji as source

    return all(os.path.isfile(os.path.join(REAL_CACHE, npm.PinnedPackage.parse(p).tarball_name))
               for p in source.PINNED_PACKAGES)


# OpenMoji 17.0.0's colour SVGs that emoji.json names, and its own extras (counted on the real package).
OPENMOJI_COUNTS = (3786, 709)


@pytest.mark.skipif(not _all_cached(), reason="the real npm tarballs are not cached (make demo fetches them)")
def test_real_packages_when_cached():
    from dalle.data.sources import emoji as source

    for text in source.PINNED_PACKAGES:
        pin = npm.PinnedPackage.parse(text)
        path = npm.fetch(pin, REAL_CACHE)  # verifies the pinned hash
        entries, files = emoji_lib.read_package(path, pin.name)
        if emoji_lib.vendor_of(pin.name) == emoji_lib.OPENMOJI_PACKAGE:
            openmoji = entries, files
            continue
        names = entries
        images = list(emoji_lib.images_of(entries, files, emoji_lib.vendor_of(pin.name)))
        assert len(entries) == 1911 and len(images) == 3786
    unnamed: list[str] = []
    images = list(emoji_lib.openmoji_images(*openmoji, names, unnamed=unnamed))
    assert len(openmoji[0]) == 4495 and (len(images), len(unnamed)) == OPENMOJI_COUNTS


def test_dalle_data_names_the_npm_problem(tmp_path, capsys, monkeypatch):
    """`dalle data` with npm failing (a stand-in npm on PATH: tests never reach the registry): one error line
    naming the command to retry, and no dataset written."""
    from dalle.data import build

    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'npm ERR! code ENOTFOUND registry.npmjs.org' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    code = build.main(["--config", "configs/emoji.py", f"--config.data.cache_dir={tmp_path / 'npm'}",
                       f"--config.data.data_dir={tmp_path / 'tfds'}",
                       "--config.data.emoji_packages=('emoji-datasource-google@16.0.0 sha512-AAAA',)"])
    err = capsys.readouterr().err
    assert code == 2
    assert "dalle data: error: `npm pack emoji-datasource-google@16.0.0` failed" in err and "ENOTFOUND" in err
    assert not (tmp_path / "tfds" / "emoji_collection").exists()


def test_npm_pack_into_a_relative_cache(tmp_path, monkeypatch):
    """`npm pack` (a stand-in that behaves like it: writes NAME-VERSION.tgz into --pack-destination, which must
    exist) into a cache folder given relative to the working directory; the result is verified and kept."""
    source = tmp_path / "registry"
    pin_text = H.write_emoji_package(str(source), "google", H.emoji_entries(2, 1))
    pin = npm.PinnedPackage.parse(pin_text)
    fake = tmp_path / "bin" / "npm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n"
                    "while [ $# -gt 0 ]; do [ \"$1\" = --pack-destination ] && dest=$2; shift; done\n"
                    f"[ -d \"$dest\" ] || {{ echo \"ENOENT: $dest\" >&2; exit 254; }}\n"
                    f"cp {source / pin.tarball_name} \"$dest/\"\n")
    fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    path = npm.fetch(pin, "cache/npm", npm=str(fake))
    assert path == str(tmp_path / "cache" / "npm" / pin.tarball_name) and os.path.isfile(path)
    assert os.listdir(tmp_path / "cache" / "npm") == [pin.tarball_name]  # no temporary folder left behind
