"""The captioned emoji collection (dalle/data/sources/emoji.py): Noto, Twemoji and OpenMoji renderings from pinned
npm packages, with held-out skin-tone and style combinations.

    dalle data --config configs/emoji.py --config.data.cache_dir=~/.cache/dalle/npm

Variants: `s32` (default: 32 px, the CPU recipes' size), `s64` (the packages' own 64 px), `folder` (your own
images instead: a folder of images with same-named .txt captions, `--config.data.path=DIR`, 32 px; see the README's
"Your own images"). Append `,root=DIR` to put the dataset, tokenizer and encoded data under DIR (default
outputs/emoji), as the emoji recipes do.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib

VARIANTS = ("s32", "s64", "folder")


def data_config(arg=None) -> ConfigDict:
    """The `data` section alone (the emoji training and eval configs embed it)."""
    variant, root = config_lib.variant_and_root(arg, VARIANTS, default_root="outputs/emoji")
    d = ConfigDict()
    d.seed = 0
    d.image_size = 64 if variant == "s64" else 32
    d.data_dir = f"{root}/tfds"
    if variant == "folder":
        d.source = "folder"
        d.path = ""  # set on the command line
        d.validation_fraction = 0.05
        return d
    d.source = "emoji"
    d.cache_dir = f"{root}/npm"
    d.validation_fraction = 0.05  # of the variants drawn by two or more vendors: one rendering held out
    d.emoji_captions_per_image = 3
    d.emoji_zero_shot_tones = 24
    d.emoji_zero_shot_styles = 24
    return d


def get_config(arg=None):
    c = ConfigDict()
    c.name = f"emoji_{arg or 's32'}"
    c.data = data_config(arg)
    return c
