"""`emoji_collection`: captioned emoji renderings from pinned npm packages (dalle/data/emoji.py) as a tfds dataset.

    dalle data --config configs/emoji.py --config.data.cache_dir=~/.cache/dalle/npm

Building fetches the pinned tarballs (dalle/data/npm.py, verified against `data.emoji_packages`), reads each
vendor's 64 px PNGs (OpenMoji's SVGs drawn at 64 px), composites them onto `data.emoji_background`, resizes to
`data.image_size` and writes one example per (image, caption template). The config name carries the image size and
a hash of everything that changes the content, so different builds never share a directory under `data_dir`.

Features: image, caption, caption_index (0 = the full caption: name, tone, style), key (vendor/variant), emoji,
variant, name, vendor, skin_tone, category, zero_shot_kind. The held-out combinations, licences and attributions
are in `builder.info.metadata`, with `left_out` (OpenMoji's images that emoji.json does not name). Images that
fail to decode are skipped and counted (build_stats.json).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Mapping, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from dalle.data import emoji as emoji_lib  # noqa: E402
from dalle.data import npm  # noqa: E402
from dalle.data.images import BuildStats  # noqa: E402

log = logging.getLogger(__name__)

# The data keys that change what is built (the config hash).
CONTENT_KEYS = ("emoji_packages", "emoji_background", "emoji_captions_per_image", "emoji_categories",
                "emoji_zero_shot_tones", "emoji_zero_shot_styles", "validation_fraction", "seed", "image_size")


class EmojiConfig(tfds.core.BuilderConfig):
    """The content keys of a `data` section, plus where the tarballs are cached (not part of the content)."""

    def __init__(self, *, content: Mapping[str, Any], cache_dir: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.content = dict(content)
        self.cache_dir = cache_dir


def make_config(data: Mapping[str, Any]) -> EmojiConfig:
    content = {k: (list(data[k]) if isinstance(data[k], (tuple, list)) else data[k]) for k in CONTENT_KEYS}
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return EmojiConfig(name=f"s{int(data['image_size'])}_{digest}",
                       description=f"{data['image_size']} px emoji, content {digest}",
                       content=content, cache_dir=os.path.expanduser(str(data.get("cache_dir", "") or "")))


def pins(content: Mapping[str, Any]) -> list[npm.PinnedPackage]:
    return [npm.PinnedPackage.parse(p) for p in content["emoji_packages"]]


def fetch_all(content: Mapping[str, Any], cache_dir: str) -> list[tuple[npm.PinnedPackage, str]]:
    """Every pinned tarball, verified (downloaded with `npm pack` into cache_dir when absent)."""
    if not cache_dir:
        raise ValueError("data.cache_dir is empty: building the emoji dataset needs a folder for the npm tarballs")
    return [(p, npm.fetch(p, cache_dir)) for p in pins(content)]


class EmojiCollection(tfds.core.GeneratorBasedBuilder):
    """Captioned emoji renderings (Noto, Twemoji, OpenMoji) with held-out skin-tone and style combinations in `zero_shot`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS: list[EmojiConfig] = []

    def __init__(self, *, config: EmojiConfig, **kwargs: Any):
        self.stats = BuildStats()
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        size = int(self.builder_config.content["image_size"])
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip(),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "caption": text,
                "caption_index": tfds.features.Scalar(dtype=np.int32),
                "key": text, "emoji": text, "variant": text, "name": text, "vendor": text, "skin_tone": text,
                "category": text, "zero_shot_kind": text,
            }),
            metadata=tfds.core.MetadataDict(),
            homepage="https://github.com/iamcal/emoji-data",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the tarballs come from npm (dalle/data/npm.py), not from tfds' downloader
        content = self.builder_config.content
        self.stats = BuildStats()
        images: list[emoji_lib.EmojiImage] = []
        packages = []
        fetched = fetch_all(content, self.builder_config.cache_dir)
        names: list[dict] = []  # the first emoji.json read: it names OpenMoji's images too
        left_out: dict[str, int] = {}
        # emoji-datasource packages first: OpenMoji's images take their names from an emoji.json
        for pin, path in sorted(fetched, key=lambda f: emoji_lib.vendor_of(f[0].name) == emoji_lib.OPENMOJI_PACKAGE):
            vendor = emoji_lib.vendor_of(pin.name)
            entries, files = emoji_lib.read_package(path, pin.name)
            missing: list[str] = []
            if vendor == emoji_lib.OPENMOJI_PACKAGE:
                if not names:
                    raise emoji_lib.EmojiDataError(
                        f"data.emoji_packages: {pin.spec} needs an {emoji_lib.PACKAGE_PREFIX}<vendor> package beside "
                        f"it (its emoji.json names the emoji OpenMoji draws)")
                unnamed: list[str] = []
                images.extend(emoji_lib.openmoji_images(entries, files, names, content["emoji_categories"],
                                                        missing, unnamed))
                if unnamed:  # by design, not a problem: counted once, not warned about one by one
                    left_out["openmoji_not_in_emoji_json"] = len(unnamed)
                    log.info("%d OpenMoji images left out: emoji.json does not name their code points (e.g. %s)",
                             len(unnamed), ", ".join(unnamed[:3]))
            else:
                names = names or entries
                images.extend(emoji_lib.images_of(entries, files, vendor, content["emoji_categories"], missing))
            for where in missing:
                self.stats.skip(where, "missing_image")
            packages.append({"package": pin.spec, "integrity": pin.integrity, "vendor": vendor,
                             "licence": emoji_lib.VENDOR_LICENCES[vendor]})
        if not images:
            raise emoji_lib.EmojiDataError(f"no emoji images in {[p['package'] for p in packages]} "
                                           f"(data.emoji_categories = {content['emoji_categories']})")
        plan = emoji_lib.plan_splits(images, int(content["seed"]), float(content["validation_fraction"]),
                                     int(content["emoji_zero_shot_tones"]), int(content["emoji_zero_shot_styles"]))
        self.info.metadata.update({
            "image_size": int(content["image_size"]), "packages": packages,
            "attribution": "; ".join(p["licence"] for p in packages), "left_out": left_out, **plan.to_metadata(),
        })
        by_split: dict[str, list[emoji_lib.EmojiImage]] = {s: [] for s in emoji_lib.SPLITS}
        for img in images:
            by_split[plan.split[img.key]].append(img)
        return {s: self._generate_examples(group, plan) for s, group in by_split.items() if group}

    def _generate_examples(self, group: Sequence[emoji_lib.EmojiImage], plan: emoji_lib.SplitPlan):
        content = self.builder_config.content
        size, background = int(content["image_size"]), tuple(content["emoji_background"])
        for img in group:
            try:
                pixels = emoji_lib.render(img.image_bytes, size, background, img.image_format)
            except (OSError, ValueError, SyntaxError) as e:
                self.stats.skip(f"{img.key} ({e})", "unreadable")
                continue
            for index, caption in enumerate(emoji_lib.captions(img, int(content["emoji_captions_per_image"]))):
                self.stats.examples += 1
                yield f"{img.key}#{index}", {
                    "image": pixels, "caption": caption, "caption_index": index, "key": img.key,
                    "emoji": img.emoji, "variant": img.variant, "name": img.name, "vendor": img.vendor,
                    "skin_tone": img.tone, "category": img.category,
                    "zero_shot_kind": plan.zero_shot_kind.get(img.key, ""),
                }
        self.info.metadata["build_stats"] = self.stats.to_dict()


def make_builder(data: Mapping[str, Any]) -> EmojiCollection:
    """The (unprepared) builder of a `data` section, for building or reading."""
    return EmojiCollection(config=make_config(data), data_dir=(data.get("data_dir", "") or None))


def build(data: Mapping[str, Any]) -> dict[str, Any]:
    """Fetches and verifies every tarball first (so npm trouble leaves nothing half-written), then builds."""
    import time

    start = time.time()
    builder = make_builder(data)
    if builder.is_prepared():
        return {"source": data["source"], "already_built": True, "data_dir": builder.data_dir,
                "splits": {n: i.num_examples for n, i in builder.info.splits.items()}}
    fetch_all(builder.builder_config.content, builder.builder_config.cache_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP))
    builder.stats.write(os.path.join(builder.data_dir, "build_stats.json"))
    return {"source": data["source"], "data_dir": builder.data_dir,
            "splits": {n: i.num_examples for n, i in builder.info.splits.items()},
            "seconds": round(time.time() - start, 2), **builder.stats.to_dict()}
