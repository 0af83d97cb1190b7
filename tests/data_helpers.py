"""Small datasets for the data-pipeline tests (tokenizer, tasks, pipeline, encode): built once per test module."""

from __future__ import annotations

import os

import numpy as np
from ml_collections import ConfigDict

from dalle import config as config_lib

SHAPES_SIZES = {"train_size": 48, "validation_size": 12, "zero_shot_size": 6}


def shapes_config(tmp_dir: str, **data_overrides) -> ConfigDict:
    """A validated config for a tiny 32 px captioned-shapes dataset under tmp_dir."""
    data = {"source": "shapes", "image_size": 32, "data_dir": os.path.join(tmp_dir, "tfds"),
            "tokenizer_path": os.path.join(tmp_dir, "tok", "shapes.model"), "vocab_size": 64,
            "encoded_dir": os.path.join(tmp_dir, "encoded"), "examples_per_shard": 20, "encode_batch_size": 8,
            "max_text_length": 12, "shuffle_buffer": 64, **SHAPES_SIZES, **data_overrides}
    return config_lib.validate(ConfigDict({"data": data}))


def fake_encoder(images: np.ndarray) -> np.ndarray:
    """A stand-in VQGAN (f4, 64 codes): the code of each 4x4 patch from its mean colour; deterministic."""
    b, h, w, _ = images.shape
    x = images.reshape(b, h // 4, 4, w // 4, 4, 3).astype(np.float32).mean(axis=(2, 4))
    return ((x[..., 0] // 64) * 16 + (x[..., 1] // 64) * 4 + (x[..., 2] // 64)).astype(np.int32)


FAKE_VQGAN_CONFIG = ConfigDict({"model": {"kind": "fake", "factor": 4, "n_embed": 64}})


def build_tokenized_encoded_shapes(tmp_dir: str, **data_overrides) -> ConfigDict:
    """Shapes dataset + sentencepiece model + fake-encoded shards; returns the config."""
    from dalle.data import build, encode
    from dalle.tokenizers import sentencepiece as tokenizer

    config = shapes_config(tmp_dir, **data_overrides)
    build.build_dataset(config.data)
    tokenizer.train_from_config(config.data)
    encode.run_encode(config, fake_encoder, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64,
                      process_index=0, process_count=1, progress=False)
    return config


# ----------------------------------------------------------------------------------------------------------------
# A tiny emoji collection with the layout of the npm emoji-datasource-<vendor> packages (dalle/data/emoji.py)
# ----------------------------------------------------------------------------------------------------------------
EMOJI_TONE_KEYS = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
EMOJI_SKIN_RGB = {"1F3FB": (247, 222, 206), "1F3FC": (243, 210, 162), "1F3FD": (213, 171, 136),
                  "1F3FE": (175, 126, 87), "1F3FF": (124, 83, 62)}


def emoji_entries(num_plain: int = 12, num_toned: int = 6) -> list[dict]:
    """emoji.json entries: plain emoji, emoji with five skin tones, and one two-person emoji with two tones."""
    entries = []
    for i in range(num_plain):
        code = f"1F{0x300 + i:03X}"
        entries.append({"name": f"THING NUMBER {i}", "unified": code, "image": f"{code.lower()}.png",
                        "short_name": f"thing_{i}", "short_names": [f"thing_{i}", f"t{i}"],
                        "category": "Objects" if i % 2 else "Food & Drink", "subcategory": "things",
                        "has_img_google": True, "has_img_twitter": True, "has_img_apple": True})
    for i in range(num_toned):
        code = f"1F{0x440 + i:03X}"
        variations = {k: {"unified": f"{code}-{k}", "image": f"{code.lower()}-{k.lower()}.png",
                          "has_img_google": True, "has_img_twitter": True} for k in EMOJI_TONE_KEYS}
        entries.append({"name": f"person doing {i}", "unified": code, "image": f"{code.lower()}.png",
                        "short_names": [f"person_{i}"], "category": "People & Body", "subcategory": "person",
                        "has_img_google": True, "has_img_twitter": True, "skin_variations": variations})
    pair = "1F46B"
    entries.append({"name": "MAN AND WOMAN HOLDING HANDS", "unified": pair, "image": "1f46b.png",
                    "short_names": ["couple"], "category": "People & Body", "subcategory": "family",
                    "has_img_google": True, "has_img_twitter": True,
                    "skin_variations": {"1F3FB-1F3FF": {"unified": f"{pair}-1F3FB-1F3FF",
                                                        "image": "1f46b-1f3fb-1f3ff.png",
                                                        "has_img_google": True, "has_img_twitter": True}}})
    return entries


def emoji_png(image_name: str, vendor: str) -> bytes:
    """A 64 px RGBA PNG: a disc on transparency, skin-coloured for a tone variant, shaped per vendor."""
    import io

    from PIL import Image, ImageDraw

    tone = next((k for k in EMOJI_TONE_KEYS if k.lower() in image_name), None)
    seed = sum(map(ord, image_name))
    colour = EMOJI_SKIN_RGB[tone] if tone else (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    if vendor == "google":
        draw.ellipse((8, 8, 56, 56), fill=colour + (255,))
    else:
        draw.rectangle((10, 10, 54, 54), fill=colour + (255,))
    draw.rectangle((28, 20, 36, 44), fill=(20, 20, 20, 255))  # a dark feature, as faces have
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _add_to_tar(tar, name: str, data: bytes) -> None:
    """One file member with a fixed mtime, so a package written twice has the same bytes (and sha512 pin)."""
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_emoji_package(cache_dir: str, vendor: str, entries: list[dict], corrupt: tuple[str, ...] = (),
                        version: str = "16.0.0") -> str:
    """Writes `emoji-datasource-<vendor>-<version>.tgz` (as `npm pack` names it) into cache_dir; returns its pin
    "name@version sha512-..."; images named in `corrupt` get bytes that are not a PNG."""
    import json
    import tarfile

    from dalle.data import npm

    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"emoji-datasource-{vendor}-{version}.tgz")
    names = []
    for e in entries:
        names.append(e["image"])
        names.extend(v["image"] for v in (e.get("skin_variations") or {}).values())

    with tarfile.open(path, "w:gz") as tar:
        _add_to_tar(tar, "package/emoji.json", json.dumps(entries).encode())
        for name in names:
            _add_to_tar(tar, f"package/img/{vendor}/64/{name}", b"not a png" if name in corrupt else emoji_png(name, vendor))
    return f"emoji-datasource-{vendor}@{version} {npm.integrity_of(path)}"


def openmoji_svg(hexcode: str) -> bytes:
    """A colour SVG with OpenMoji's layout (72-unit viewBox, a colour group and a black line group): a disc,
    skin-coloured for a tone variant."""
    tone = next((k for k in EMOJI_TONE_KEYS if k in hexcode.upper()), None)
    seed = sum(map(ord, hexcode))
    rgb = EMOJI_SKIN_RGB[tone] if tone else (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    fill = "#%02X%02X%02X" % rgb
    return (f'<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">'
            f'<g id="color"><circle cx="36" cy="36" r="23" fill="{fill}"/></g>'
            f'<g id="line"><circle cx="36" cy="36" r="23" fill="none" stroke="#000000" stroke-width="2"/></g>'
            f'</svg>').encode()


def write_openmoji_package(cache_dir: str, entries: list[dict], corrupt: tuple[str, ...] = (),
                           extras: tuple[str, ...] = ("E000", "E001"), version: str = "17.0.0") -> str:
    """Writes `openmoji-<version>.tgz` with the package's layout (data/openmoji.json, color/svg/<hexcode>.svg and
    black/svg, which is not read) drawing every emoji.json rendering of `entries`, plus OpenMoji-only `extras` that
    emoji.json does not name; the first plain emoji is written with FE0F, as OpenMoji writes some. Returns its pin;
    hexcodes named in `corrupt` get SVG that does not parse."""
    import json
    import tarfile

    from dalle.data import npm

    hexcodes = []
    for i, e in enumerate(entries):
        hexcodes.append(e["unified"] + ("-FE0F" if i == 0 else ""))
        hexcodes.extend(v["unified"] for v in (e.get("skin_variations") or {}).values())
    index = [{"emoji": "", "hexcode": h, "group": "people-body", "subgroups": "person", "annotation": f"om {h}",
              "tags": "", "skintone": ""} for h in hexcodes + list(extras)]
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"openmoji-{version}.tgz")

    with tarfile.open(path, "w:gz") as tar:
        _add_to_tar(tar, "package/data/openmoji.json", json.dumps(index).encode())
        for h in hexcodes + list(extras):
            _add_to_tar(tar, f"package/color/svg/{h}.svg", b"<svg not closed" if h in corrupt else openmoji_svg(h))
            _add_to_tar(tar, f"package/black/svg/{h}.svg", b"<svg not read")
    return f"openmoji@{version} {npm.integrity_of(path)}"


def emoji_config(tmp_dir: str, pins: list[str], **data_overrides) -> ConfigDict:
    """A validated config for a tiny 32 px emoji collection under tmp_dir (tarballs already in tmp_dir/npm)."""
    data = {"source": "emoji", "image_size": 32, "data_dir": os.path.join(tmp_dir, "tfds"),
            "cache_dir": os.path.join(tmp_dir, "npm"), "emoji_packages": tuple(pins), "validation_fraction": 0.3,
            "emoji_zero_shot_tones": 2, "emoji_zero_shot_styles": 2, "emoji_captions_per_image": 3,
            "tokenizer_path": os.path.join(tmp_dir, "tok", "emoji.model"), "vocab_size": 64,
            "max_text_length": 16, "shuffle_buffer": 64, **data_overrides}
    return config_lib.validate(ConfigDict({"data": data}))


def build_tiny_emoji(tmp_dir: str, corrupt: tuple[str, ...] = (), openmoji: bool = False,
                     **data_overrides) -> ConfigDict:
    """Writes the two fake vendor packages (and a fake openmoji package), builds the dataset, returns the config."""
    from dalle.data import build

    entries = emoji_entries()
    cache = os.path.join(tmp_dir, "npm")
    pins = [write_emoji_package(cache, v, entries, corrupt=corrupt) for v in ("google", "twitter")]
    if openmoji:
        pins.append(write_openmoji_package(cache, entries, corrupt=tuple(c.split(".")[0].upper() for c in corrupt)))
    config = emoji_config(tmp_dir, pins, **data_overrides)
    build.build_dataset(config.data)
    return config
