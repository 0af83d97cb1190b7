"""`emoji`: captioned emoji renderings from pinned npm packages (dalle/data/emoji.py), built by
dalle.data.builders.emoji into the tfds dataset `emoji_collection`.

The pins are exact versions with the `integrity` hash `npm pack --json` printed for them: a package that changes
under the same version is refused. Only image sets whose licence allows this use are accepted (Noto: Apache-2.0,
Twemoji: CC-BY-4.0, OpenMoji: CC-BY-SA-4.0); attribution goes into the dataset's metadata.
"""

from __future__ import annotations

from typing import Any, Iterator

from ml_collections import ConfigDict

from dalle.data.sources import DataSource, register_data_source

PINNED_PACKAGES = (
    "emoji-datasource-google@16.0.0 "
    "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
    "emoji-datasource-twitter@16.0.0 "
    "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
    "openmoji@17.0.0 "
    "sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
)


def defaults() -> dict[str, Any]:
    return {
        "cache_dir": "",  # where `npm pack` tarballs are kept (reused when present and matching their pin)
        "emoji_packages": PINNED_PACKAGES,  # "name@version sha512-..." pins (emoji-datasource-<vendor>)
        "emoji_background": (255, 255, 255),  # RGB the transparent PNGs are composited onto
        "emoji_captions_per_image": 3,  # examples per image, one per caption template (1..4)
        "emoji_categories": (),  # keep only these emoji.json categories (empty: all)
        "emoji_zero_shot_tones": 24,  # emoji with one skin tone held out of train
        "emoji_zero_shot_styles": 24,  # emoji with one vendor style held out of train
    }


def check(d: ConfigDict) -> Iterator[str]:
    from dalle.data import emoji as emoji_lib  # light: PIL + numpy
    from dalle.data import npm

    vendors = []
    for pin in d.emoji_packages:
        try:
            vendors.append(emoji_lib.vendor_of(npm.PinnedPackage.parse(pin).name))
        except ValueError as e:
            yield f"data.emoji_packages: {e}"
    if not d.emoji_packages:
        yield "data.emoji_packages is empty"
    elif vendors and set(vendors) == {emoji_lib.OPENMOJI_PACKAGE}:
        yield (f"data.emoji_packages: {emoji_lib.OPENMOJI_PACKAGE} needs an {emoji_lib.PACKAGE_PREFIX}<vendor> "
               f"package beside it (its emoji.json names the emoji OpenMoji draws)")
    bg = tuple(d.emoji_background)
    if len(bg) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in bg):
        yield f"data.emoji_background = {bg} must be three integers in [0, 255] (RGB)"
    if not 1 <= d.emoji_captions_per_image <= emoji_lib.NUM_TEMPLATES:
        yield (f"data.emoji_captions_per_image = {d.emoji_captions_per_image} must be in "
               f"[1, {emoji_lib.NUM_TEMPLATES}]")
    for key in ("emoji_zero_shot_tones", "emoji_zero_shot_styles"):
        if d[key] < 0:
            yield f"data.{key} = {d[key]} must be >= 0"
    if d.image_size and not 8 <= d.image_size <= emoji_lib.IMAGE_SIZE:
        yield (f"data.image_size = {d.image_size}: emoji images are {emoji_lib.IMAGE_SIZE} px, so it must be in "
               f"[8, {emoji_lib.IMAGE_SIZE}]")


register_data_source(DataSource(
    name="emoji",
    description="captioned emoji (Noto, Twemoji, OpenMoji) from pinned npm packages, with held-out tone/style combinations",
    builder="dalle.data.builders.emoji:make_builder",
    tfds_name="emoji_collection",
    build="dalle.data.builders.emoji:build",
    build_needs=("cache_dir",),
    check=check,
    defaults=defaults,
))
