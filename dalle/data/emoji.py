"""The captioned emoji collection: emoji images of the npm `emoji-datasource-<vendor>` packages (iamcal/emoji-data)
and of the `openmoji` package, their captions, and the held-out splits. Pure Python + PIL, and resvg for OpenMoji's
SVGs (no TensorFlow): the tfds builder (dalle/data/builders/emoji.py) and the tests use it.

Each emoji-datasource package has `package/emoji.json` (one entry per emoji: `name`, `short_names`, `category`,
`subcategory`, `image`, `has_img_<vendor>`, `skin_variations` {"1F3FB": {"image": ...}, "1F3FB-1F3FC": ...}) and
64 px RGBA PNGs under `package/img/<vendor>/64/`. `openmoji` has `package/data/openmoji.json` (`hexcode`,
`annotation`, `skintone`, ...) and one SVG per emoji under `package/color/svg/<hexcode>.svg`; its images take their
names from emoji.json, matched by code points, so every vendor's rendering of an emoji has the same captions but
for the style (OpenMoji-only emoji, which emoji.json does not name, are left out and counted). One image is one
(emoji, skin-tone variant, vendor) rendering.

Splits (a pure function of the records and the seed):
- `zero_shot`: held-out combinations. For `zero_shot_tones` emoji with all five skin tones, one tone is never seen
  with that emoji in train (all vendors' images of it are here), and for `zero_shot_styles` other emoji one vendor
  style is never seen with that emoji (all its variants in that vendor are here).
- `validation`: held-out renderings: for a `validation_fraction` of the remaining variants drawn in two or more
  vendors, one vendor's image, while the other vendors' images of it stay in train.
- `train`: the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

# Unicode skin-tone modifiers (Fitzpatrick scale) and their CLDR names.
SKIN_TONES: dict[str, str] = {
    "1F3FB": "light",
    "1F3FC": "medium-light",
    "1F3FD": "medium",
    "1F3FE": "medium-dark",
    "1F3FF": "dark",
}
TONE_NAMES = tuple(SKIN_TONES.values())
# Image sets whose licence allows this use, with the attribution each licence asks for (from the packages'
# README.md: "Google ... Apache License 2.0", "Twitter ... CC-BY 4.0"; openmoji's README.md and LICENSE.txt:
# CC BY-SA 4.0, which also asks that what is made from the images be shared under the same licence). The apple and
# facebook sets are not licensed for it and are refused.
VENDOR_LICENCES: dict[str, str] = {
    "google": "Noto Emoji images by Google, Apache License 2.0 (https://github.com/googlefonts/noto-emoji)",
    "twitter": "Twemoji images by Twitter, Inc and other contributors, CC-BY 4.0 (https://github.com/twitter/twemoji)",
    "openmoji": "OpenMoji images by the OpenMoji project (https://openmoji.org), CC BY-SA 4.0; images and data sets "
                "derived from them are shared under the same licence",
}
PACKAGE_PREFIX = "emoji-datasource-"
OPENMOJI_PACKAGE = "openmoji"  # its vendor name too
IMAGE_SIZE = 64  # the size of the packages' PNGs; OpenMoji's SVGs are drawn at this size
SPLITS = ("train", "validation", "zero_shot")
NUM_TEMPLATES = 4


class EmojiDataError(ValueError):
    """A package that is not an emoji-datasource tarball, or a vendor whose images may not be used."""


def _usable_packages() -> str:
    return ", ".join(v if v == OPENMOJI_PACKAGE else PACKAGE_PREFIX + v for v in VENDOR_LICENCES)


def vendor_of(package_name: str) -> str:
    """"emoji-datasource-twitter" -> "twitter", "openmoji" -> "openmoji"; refuses other packages and unlicensed
    vendors, naming them."""
    if package_name == OPENMOJI_PACKAGE:
        return OPENMOJI_PACKAGE
    if not package_name.startswith(PACKAGE_PREFIX):
        raise EmojiDataError(f"package {package_name!r} is neither an {PACKAGE_PREFIX}<vendor> package nor "
                             f"{OPENMOJI_PACKAGE} (usable: {_usable_packages()})")
    vendor = package_name[len(PACKAGE_PREFIX):]
    if vendor not in VENDOR_LICENCES or vendor == OPENMOJI_PACKAGE:
        raise EmojiDataError(f"package {package_name!r}: the {vendor!r} images are not licensed for this use "
                             f"(usable: {_usable_packages()})")
    return vendor


@dataclasses.dataclass(frozen=True)
class EmojiImage:
    """One rendering: an emoji (`emoji` = base code points), one of its skin-tone variants, in one vendor style."""

    emoji: str  # base unified code points, e.g. "1F44D"
    variant: str  # the variant's unified code points ("1F44D-1F3FF"); == emoji without a skin tone
    tone: str  # "" | a TONE_NAMES entry | "light/dark" for two-person emoji with two tones
    vendor: str
    name: str  # lowercased Unicode name, e.g. "thumbs up sign"
    short_names: tuple[str, ...]
    category: str
    subcategory: str
    image_bytes: bytes  # the package's file
    image_format: str = "png"  # "png" | "svg" (OpenMoji)

    @property
    def key(self) -> str:
        return f"{self.vendor}/{self.variant}"


def tone_of(modifier_key: str) -> str | None:
    """"1F3FF" -> "dark"; "1F3FB-1F3FF" -> "light/dark" ("light" when both are the same); None if not a tone."""
    parts = modifier_key.upper().split("-")
    names = [SKIN_TONES.get(p) for p in parts]
    if not parts or any(n is None for n in names):
        return None
    return names[0] if len(set(names)) == 1 else "/".join(names)


def tone_phrase(tone: str) -> str:
    """"dark" -> "dark skin tone"; "light/dark" -> "light and dark skin tones"."""
    parts = tone.split("/")
    return f"{parts[0]} skin tone" if len(parts) == 1 else f"{' and '.join(parts)} skin tones"


def _readable(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").split()).lower()


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def captions(img: EmojiImage, count: int) -> list[str]:
    """`count` (1..NUM_TEMPLATES) distinct captions, the first the full one (name, tone, style): what eval uses.

    "thumbs up sign, dark skin tone, twitter style" / "an emoji of a thumbs up sign with dark skin tone" /
    "thumbsup, dark skin tone" (the first short name that differs from the name; else subcategory: name) /
    "people & body: thumbs up sign, in twitter style".
    """
    tone = f", {tone_phrase(img.tone)}" if img.tone else ""
    shorts = [_readable(s) for s in img.short_names if any(c.isalpha() for c in s)]
    short = next((s for s in shorts if s and s != img.name), "")
    if not short:
        short = f"{_readable(img.subcategory)}: {img.name}"
    out = [
        f"{img.name}{tone}, {img.vendor} style",
        f"an emoji of {_article(img.name)} {img.name}" + (f" with {tone_phrase(img.tone)}" if img.tone else ""),
        f"{short}{tone}",
        f"{img.category.lower()}: {img.name}{tone}, in {img.vendor} style",
    ]
    return out[:max(1, min(count, NUM_TEMPLATES))]


# ----------------------------------------------------------------------------------------------------------------
# Reading the packages
# ----------------------------------------------------------------------------------------------------------------
def read_package(path: str, package_name: str) -> tuple[list[dict], dict[str, bytes]]:
    """(its index entries, {image file name: bytes}) of one package tarball: emoji.json and the 64 px PNGs of an
    emoji-datasource package, or openmoji.json and the colour SVGs (named <hexcode>.svg) of openmoji."""
    vendor = vendor_of(package_name)
    if vendor == OPENMOJI_PACKAGE:
        index_name, prefix, suffix = "package/data/openmoji.json", "package/color/svg/", ".svg"
    else:
        index_name, prefix, suffix = "package/emoji.json", f"package/img/{vendor}/{IMAGE_SIZE}/", ".png"
    entries: list[dict] | None = None
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name == index_name:
                    entries = json.load(tar.extractfile(member))
                elif member.name.startswith(prefix) and member.name.endswith(suffix) and "/" not in \
                        member.name[len(prefix):]:
                    files[member.name[len(prefix):]] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise EmojiDataError(f"{path}: not a readable package tarball ({e})") from None
    except json.JSONDecodeError as e:
        raise EmojiDataError(f"{path}: {index_name} is not valid JSON ({e})") from None
    if entries is None:
        raise EmojiDataError(f"{path}: no {index_name} (is {package_name} the package it claims to be?)")
    if not files:
        raise EmojiDataError(f"{path}: no images under {prefix}")
    return entries, files


def _renderings(entries: Sequence[Mapping], categories: Iterable[str]) -> Iterator[tuple[dict, str, str, Mapping]]:
    """(the emoji's fields, variant code points, tone, the variant's record) of every emoji.json entry and each of
    its skin-tone variants; `categories` non-empty keeps only those categories."""
    keep = set(categories)
    for e in entries:
        if keep and e.get("category") not in keep:
            continue
        name = " ".join(str(e.get("name") or e.get("short_name") or "").lower().split())
        if not name:
            continue
        base = dict(emoji=str(e["unified"]).upper(), name=name, short_names=tuple(e.get("short_names") or ()),
                    category=str(e.get("category", "")), subcategory=str(e.get("subcategory", "")))
        yield base, base["emoji"], "", e
        for mod, v in sorted((e.get("skin_variations") or {}).items()):
            tone = tone_of(mod)
            if tone is not None:
                yield base, str(v.get("unified", f"{base['emoji']}-{mod}")).upper(), tone, v


def images_of(entries: Sequence[Mapping], pngs: Mapping[str, bytes], vendor: str,
              categories: Iterable[str] = (), missing: list[str] | None = None) -> Iterator[EmojiImage]:
    """The vendor's renderings listed in emoji.json (base emoji and skin-tone variants) whose PNG is present.

    `categories` non-empty keeps only those categories. Listed images whose file is absent are appended to
    `missing`."""
    for base, variant, tone, v in _renderings(entries, categories):
        if not v.get(f"has_img_{vendor}", False) or not v.get("image"):
            continue
        png = pngs.get(v["image"])
        if png is None:
            if missing is not None:
                missing.append(f"{vendor}/{v['image']}")
            continue
        yield EmojiImage(variant=variant, tone=tone, vendor=vendor, image_bytes=png, **base)


def code_points_key(code: str) -> str:
    """The code points without variation selector 16 (FE0F), which the two indexes write differently
    ("2764-FE0F" in one, "2764" in the other)."""
    return "-".join(p for p in code.upper().split("-") if p and p != "FE0F")


def openmoji_images(om_entries: Sequence[Mapping], svgs: Mapping[str, bytes], named_by: Sequence[Mapping],
                    categories: Iterable[str] = (), missing: list[str] | None = None,
                    unnamed: list[str] | None = None) -> Iterator[EmojiImage]:
    """OpenMoji's renderings, named by the emoji.json entries `named_by` (an emoji-datasource package's index)
    with the same code points, so that their captions match the other vendors'. Hexcodes emoji.json does not
    list (OpenMoji's own extras) go to `unnamed`; listed SVGs that are absent, to `missing`."""
    index: dict[str, tuple[dict, str, str]] = {}
    for base, variant, tone, _ in _renderings(named_by, ()):  # every emoji: a filtered-out one is not "unnamed"
        index.setdefault(code_points_key(variant), (base, variant, tone))
    keep = set(categories)
    seen: set[str] = set()
    for om in om_entries:
        hexcode = str(om.get("hexcode", "")).upper()
        match = index.get(code_points_key(hexcode))
        if match is None:
            if unnamed is not None and hexcode:
                unnamed.append(f"{OPENMOJI_PACKAGE}/{hexcode}")
            continue
        base, variant, tone = match
        if variant in seen or (keep and base["category"] not in keep):
            continue
        svg = svgs.get(f"{hexcode}.svg")
        if svg is None:
            if missing is not None:
                missing.append(f"{OPENMOJI_PACKAGE}/{hexcode}.svg")
            continue
        seen.add(variant)
        yield EmojiImage(variant=variant, tone=tone, vendor=OPENMOJI_PACKAGE, image_bytes=svg, image_format="svg",
                         **base)


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------
def rasterize_svg(svg: bytes, size: int = IMAGE_SIZE) -> bytes:
    """An RGBA PNG of `size` px drawn from SVG bytes by resvg (a maintained renderer with wheels and no system
    libraries). Raises ValueError for SVG it cannot draw."""
    try:
        import resvg_py
    except ImportError:
        raise ImportError("drawing OpenMoji's SVGs needs resvg-py: pip install resvg-py") from None
    try:
        text = svg.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 SVG text ({e})") from None
    return bytes(resvg_py.svg_to_bytes(svg_string=text, width=size, height=size, skip_system_fonts=True))


def render(data: bytes, size: int, background: Sequence[int], image_format: str = "png") -> np.ndarray:
    """uint8 [size, size, 3]: the RGBA image (a PNG, or an SVG drawn at IMAGE_SIZE px first) composited onto
    `background`, then resized with Lanczos (antialiased). Raises (OSError, ValueError, SyntaxError from PIL) for
    an undecodable image."""
    png = rasterize_svg(data) if image_format == "svg" else data
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        rgba = im.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, tuple(int(c) for c in background) + (255,))
    rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.LANCZOS)
    return np.asarray(rgb, np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------
def _unit(seed: int, *parts: str) -> float:
    """A stable number in [0, 1) for (seed, parts)."""
    digest = hashlib.sha1("|".join([str(seed), *parts]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclasses.dataclass
class SplitPlan:
    """Where each rendering goes, and which combinations were held out (kept in the dataset's metadata)."""

    split: dict[str, str]  # image key -> split
    zero_shot_kind: dict[str, str]  # image key -> "skin_tone" | "style" (zero_shot only)
    held_out_tones: dict[str, str]  # emoji -> the tone never seen with it in train
    held_out_styles: dict[str, str]  # emoji -> the vendor never seen with it in train

    def to_metadata(self) -> dict:
        counts = {s: sum(1 for v in self.split.values() if v == s) for s in SPLITS}
        return {"held_out_tones": dict(sorted(self.held_out_tones.items())),
                "held_out_styles": dict(sorted(self.held_out_styles.items())), "images_per_split": counts}


def plan_splits(images: Sequence[EmojiImage], seed: int, validation_fraction: float, zero_shot_tones: int,
                zero_shot_styles: int) -> SplitPlan:
    """The split of every image (see the module docstring); raises EmojiDataError when the collection has too few
    emoji for the asked numbers of held-out combinations."""
    vendors = sorted({i.vendor for i in images})
    by_emoji: dict[str, list[EmojiImage]] = {}
    for i in images:
        by_emoji.setdefault(i.emoji, []).append(i)

    def single_tones(group: list[EmojiImage], vendor: str) -> set[str]:
        return {i.tone for i in group if i.vendor == vendor and i.tone in TONE_NAMES}

    # Emoji drawn with all five tones by every vendor: a held-out tone is then seen with other emoji, and the
    # emoji with other tones, in every style.
    toned = sorted((e for e, g in by_emoji.items() if all(len(single_tones(g, v)) == 5 for v in vendors)),
                   key=lambda e: _unit(seed, "tone", e))
    if zero_shot_tones > len(toned):
        raise EmojiDataError(f"data.emoji_zero_shot_tones = {zero_shot_tones}, but only {len(toned)} emoji have "
                             f"all five skin tones in every vendor ({', '.join(vendors)})")
    held_tones = {e: TONE_NAMES[int(_unit(seed, "tone-pick", e) * 5)] for e in toned[:zero_shot_tones]}

    styled = sorted((e for e, g in by_emoji.items()
                     if e not in held_tones and len({i.vendor for i in g}) == len(vendors) >= 2),
                    key=lambda e: _unit(seed, "style", e))
    if zero_shot_styles > len(styled):
        raise EmojiDataError(f"data.emoji_zero_shot_styles = {zero_shot_styles}, but only {len(styled)} emoji are "
                             f"drawn by {len(vendors)} >= 2 vendors ({', '.join(vendors)})")
    held_styles = {e: vendors[int(_unit(seed, "style-pick", e) * len(vendors))]
                   for e in styled[:zero_shot_styles]}

    split: dict[str, str] = {}
    kind: dict[str, str] = {}
    by_variant: dict[str, list[EmojiImage]] = {}
    for i in images:
        if held_tones.get(i.emoji) == i.tone:
            split[i.key], kind[i.key] = "zero_shot", "skin_tone"
        elif held_styles.get(i.emoji) == i.vendor:
            split[i.key], kind[i.key] = "zero_shot", "style"
        else:
            split[i.key] = "train"
            by_variant.setdefault(i.variant, []).append(i)
    for variant, group in sorted(by_variant.items()):
        if group[0].emoji in held_tones or group[0].emoji in held_styles or len(group) < 2:
            continue  # held-out emoji keep all their remaining renderings in train
        if _unit(seed, "validation", variant) < validation_fraction:
            ordered = sorted(group, key=lambda i: i.vendor)
            held = ordered[int(_unit(seed, "validation-pick", variant) * len(ordered))]
            split[held.key] = "validation"
    return SplitPlan(split, kind, held_tones, held_styles)
