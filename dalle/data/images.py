"""Image loading for the real-data builders: decode, fix the mode, center-crop and resize with PIL bicubic.

Web-scraped data always contains broken files. Nothing here raises on bad input: `load_image` returns `None`
with a reason, and `BuildStats` counts reasons (and keeps the first few offending files) so a build reports
"1,204 skipped: 800 truncated, 300 too_small, ..." instead of dying at example 3 million.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

# Truncated files must fail loudly (and be counted), not be half-decoded silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclasses.dataclass
class BuildStats:
    """Counts of what a build kept, converted and skipped; written to the dataset's metadata and a JSON file."""

    max_listed: int = 50
    examples: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    converted: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    problems: list = dataclasses.field(default_factory=list)  # [(file, reason)], first `max_listed`

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason] += 1
        self._note(where, reason)

    def convert(self, reason: str) -> None:
        self.converted[reason] += 1

    def report(self, where: str, reason: str) -> None:
        """A problem that did not drop the example (kept in the list, counted under `reported`)."""
        self.converted[reason] += 1
        self._note(where, reason)

    def _note(self, where: str, reason: str) -> None:
        if len(self.problems) < self.max_listed:
            self.problems.append((where, reason))
        log.warning("%s: %s", where, reason)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "skipped_total": self.num_skipped,
            "skipped": dict(sorted(self.skipped.items())),
            "converted": dict(sorted(self.converted.items())),
            "problems": [list(p) for p in self.problems],
        }

    def summary(self) -> str:
        parts = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
        conv = ", ".join(f"{n} {r}" for r, n in sorted(self.converted.items()))
        return (f"{self.examples} examples kept, {self.num_skipped} skipped" + (f" ({parts})" if parts else "")
                + (f"; converted/reported: {conv}" if conv else ""))

    def write(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)


def _to_rgb(img: Image.Image, stats: BuildStats | None) -> Image.Image:
    """RGB with transparency composited on white (black would invent dark backgrounds)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        if stats is not None:
            stats.convert(f"alpha_{mode}")
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: rescale to 8 bits rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(np.nan_to_num(arr).round().astype(np.uint8), "L")
    if stats is not None:
        stats.convert(f"mode_{mode}")
    return img.convert("RGB")


def load_image(
    data: bytes | str,
    size: int,
    *,
    min_side: int = 0,
    stats: BuildStats | None = None,
    where: str = "",
) -> np.ndarray | None:
    """uint8 [size, size, 3] from encoded bytes or a path; None (counted in `stats`) for an unusable image.

    Skip reasons: `unreadable` (not an image / corrupt), `truncated`, `too_small` (shorter side < min_side),
    `too_large` (decompression bomb), `missing_image`. Non-RGB modes are converted and counted as such.
    The largest centered square is cropped, then resized with PIL bicubic (reproducible with plain PIL).
    """
    where = where or (data if isinstance(data, str) else "<bytes>")
    try:
        if isinstance(data, str):
            if not os.path.isfile(data):
                if stats is not None:
                    stats.skip(where, "missing_image")
                return None
            with open(data, "rb") as f:
                data = f.read()
        if not data:
            if stats is not None:
                stats.skip(where, "unreadable")
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()  # decode now: truncation and corruption surface here
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img = ImageOps.exif_transpose(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        if stats is not None:
            stats.skip(where, "too_large")
        return None
    except OSError as e:  # PIL raises OSError for truncated and unidentified files
        reason = "truncated" if "truncated" in str(e).lower() else "unreadable"
        if stats is not None:
            stats.skip(where, reason)
        return None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError, Image.UnidentifiedImageError):
        if stats is not None:
            stats.skip(where, "unreadable")
        return None
    w, h = img.size
    if min(w, h) < max(1, min_side):
        if stats is not None:
            stats.skip(where, "too_small")
        return None
    try:
        img = _to_rgb(img, stats)
        return center_crop_resize(img, size)
    except (OSError, ValueError) as e:
        if stats is not None:
            stats.skip(where, "unreadable")
        log.debug("%s: %s", where, e)
        return None


def center_crop_resize(img: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: the largest centered square, resized with bicubic filtering (PIL's antialiased
    bicubic, so downscaling by large factors does not alias)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    out = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (size, size, 3):
        raise ValueError(f"expected an RGB image of {size}x{size}, got array of shape {arr.shape}")
    return arr


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


# What `load_image`'s skip reasons mean to someone who handed us one image (`read_user_image`).
_USER_REASONS = {
    "missing_image": "does not exist or is not a file",
    "unreadable": "is not an image this program can read (PNG, JPEG, WebP, GIF, BMP, TIFF)",
    "truncated": "is a truncated image file",
    "too_large": f"has more pixels than the {Image.MAX_IMAGE_PIXELS:,} allowed (a decompression bomb?)",
    "too_small": "is empty",
}


def read_user_image(source: str | bytes | np.ndarray, size: int, what: str = "image") -> np.ndarray:
    """uint8 [size, size, 3] from a path, encoded bytes or an array ([H, W], [H, W, 1|3|4], uint8 or float in
    [0, 1]): one image a person handed in (an image prompt, an init image). Unlike `load_image` it raises a
    ValueError naming `what` and the reason; modes are converted as the builders convert them (alpha over
    white), and the largest centered square is resized."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)) or 0 in arr.shape:
            raise ValueError(f"{what}: an array image must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], "
                             f"got shape {source.shape}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise ValueError(f"{what}: float images must be finite and in [0, 1]")
            arr = np.round(arr * 255.0).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise ValueError(f"{what}: array images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
        img = Image.fromarray(arr, "RGBA" if arr.ndim == 3 and arr.shape[-1] == 4 else None)
        return center_crop_resize(_to_rgb(img, None), size)
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise ValueError(f"{what}: expected a file path, image bytes or an array, got {type(source).__name__}")
    stats = BuildStats()
    data = source if isinstance(source, bytes) else os.fspath(source)
    # A file is named by its path; uploaded bytes by their size (they have no name).
    label = f"of {len(data):,} bytes" if isinstance(data, bytes) else repr(data)
    image = load_image(data, size, stats=stats, where=label)
    if image is None:
        reason = next(iter(stats.skipped), "unreadable")
        raise ValueError(f"{what} {label} {_USER_REASONS.get(reason, reason)}")
    return image
