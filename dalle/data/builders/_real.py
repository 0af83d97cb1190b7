"""What every real-data tfds builder shares: features, the train/validation assignment, and build statistics.

Real-data builders read local files only (`source_path`), so they build offline. Each example is
{image: uint8 [S, S, 3] (PIL bicubic center crop), caption: the raw caption (normalized later, by the tasks),
key: where it came from}. Bad inputs never stop a build: they are counted in `self.stats` (dalle.data.images.
BuildStats), which is stored in the dataset's metadata (`builder.info.metadata["build_stats"]`) and in
`<data_dir>/<name>/<version>/build_stats.json`.

One data_dir holds one dataset per builder name: build different folders into different data_dirs.
"""

from __future__ import annotations

import abc
import logging
import zlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from dalle.data.images import BuildStats, load_image

SPLITS = ("train", "validation")


def split_of(key: str, validation_fraction: float) -> str:
    """A stable split for a key (same answer on every host and every rebuild)."""
    if validation_fraction <= 0:
        return "train"
    bucket = zlib.crc32(key.encode("utf-8")) % 1_000_000
    return "validation" if bucket < validation_fraction * 1_000_000 else "train"


class RealDataBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: subclasses implement `_iter_raw()` yielding (key, image bytes or path or None, caption)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def __init__(
        self,
        *,
        source_path: str | None = None,
        image_size: int = 256,
        min_image_side: int = 16,
        validation_fraction: float = 0.01,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.source_path = source_path
        self.image_size = int(image_size)
        self.min_image_side = int(min_image_side)
        self.validation_fraction = float(validation_fraction)
        self.options = dict(options or {})
        self.stats = BuildStats()
        super().__init__(**kwargs)

    @classmethod
    def from_data_config(cls, data_config: Any) -> "RealDataBuilder":
        """The builder a `data` config section describes (for building or reading); the `builder` of the real-data
        sources in dalle.data.sources."""
        options = {
            "image_column": data_config.get("image_column", ""),
            "caption_column": data_config.get("caption_column", "caption"),
            "images_dir": data_config.get("images_dir", ""),
            "cc_image_naming": data_config.get("cc_image_naming", "index"),
        }
        return cls(
            source_path=data_config.path or None,
            image_size=data_config.image_size,
            min_image_side=data_config.get("min_image_side", 16),
            validation_fraction=data_config.get("validation_fraction", 0.01),
            options=options,
            data_dir=data_config.data_dir or None,
        )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(self.__doc__ or "").strip().split("\n")[0],
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(self.image_size, self.image_size, 3)),
                "caption": tfds.features.Text(),
                "key": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        if not self.source_path:
            raise ValueError(f"{self.name}: building needs source_path (data.path), got {self.source_path!r}")
        self.stats = BuildStats()
        self.info.metadata["image_size"] = self.image_size
        self.info.metadata["source_path"] = str(self.source_path)
        self.info.metadata["build_stats"] = self.stats.to_dict()
        # tfds cannot write an empty split: a split no key falls into is left out (with a warning).
        counts = dict.fromkeys(SPLITS, 0)
        for key in self._iter_keys():
            counts[split_of(key, self.validation_fraction)] += 1
        if counts["train"] == 0:
            raise ValueError(f"{self.name}: no examples found in data.path {self.source_path!r}")
        present = [s for s in SPLITS if counts[s]]
        if self.validation_fraction > 0 and not counts["validation"]:
            logging.warning("%s: none of the %d keys falls in the validation split (validation_fraction=%s); "
                            "building train only", self.name, counts["train"], self.validation_fraction)
        return {split: self._generate_examples(split) for split in present}

    def _iter_keys(self) -> Iterator[str]:
        """Every key `_iter_raw` will yield, for the split assignment; subclasses may list them more cheaply."""
        real_stats, self.stats = self.stats, BuildStats()
        try:
            for key, _, _ in self._iter_raw():
                yield key
        finally:
            self.stats = real_stats

    @abc.abstractmethod
    def _iter_raw(self) -> Iterator[tuple[str, bytes | str | None, str | None]]:
        """(key, image bytes | image path | None when missing, caption | None when missing) in a stable order.

        Problems found while listing (missing caption files, corrupt shards) are counted in `self.stats` here.
        """

    def _caption_text(self, key: str, caption: Any) -> str | None:
        """The caption as text, or None (skipped and counted): a source may hold bytes, numbers or nothing where
        a caption should be. Bytes that are not UTF-8, and text that already carries U+FFFD replacement characters
        (decoded with errors="replace" by a reader), are kept and counted as `caption_bad_encoding`."""
        if caption is None:
            self.stats.skip(key, "missing_caption")
            return None
        if isinstance(caption, bytes):
            try:
                caption = caption.decode("utf-8")
            except UnicodeDecodeError:
                caption = caption.decode("utf-8", errors="replace")
        if not isinstance(caption, str):
            self.stats.skip(f"{key} ({type(caption).__name__} {str(caption)[:40]!r})", "caption_not_text")
            return None
        if "\ufffd" in caption:
            self.stats.report(key, "caption_bad_encoding")
        return caption

    def _generate_examples(self, split: str):
        seen: set[str] = set()
        for key, image, caption in self._iter_raw():
            if split_of(key, self.validation_fraction) != split:
                continue
            if key in seen:
                self.stats.skip(key, "duplicate_key")
                continue
            seen.add(key)
            caption = self._caption_text(key, caption)
            if caption is None:
                continue
            caption = caption.strip()
            if not caption:
                self.stats.skip(key, "empty_caption")
                continue
            if image is None:
                self.stats.skip(key, "missing_image")
                continue
            arr = load_image(image, self.image_size, min_side=self.min_image_side, stats=self.stats, where=key)
            if arr is None:
                continue
            self.stats.examples += 1
            self.info.metadata["build_stats"] = self.stats.to_dict()
            yield key, {"image": np.asarray(arr, np.uint8), "caption": caption, "key": key}
        self.info.metadata["build_stats"] = self.stats.to_dict()
