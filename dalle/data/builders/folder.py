"""tfds builders for images a user has on disk: a folder with same-stem `.txt` captions, or a CSV/TSV index.

    dalle data --config configs/folder_data.py --config.data.path=/photos --config.data.data_dir=/tmp/tfds

Folder: every image file under `source_path` (recursively, sorted) with `stem.txt` beside it. A missing or empty
caption file is reported per file (logged, counted as missing_caption / empty_caption, listed in build_stats) and
the image is skipped. CSV/TSV: rows of `path,caption` (`.tsv`/`.txt` are tab-separated); a header row naming the
columns is recognised (`options["image_column"]`, `options["caption_column"]`), paths are relative to the file.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import Iterator

from dalle.data.builders._real import RealDataBuilder
from dalle.data.images import is_image_file

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def read_caption_file(path: str) -> str | None:
    """The caption in a .txt file (None when absent); undecodable bytes are replaced, not fatal."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        raw = f.read()
    return raw.decode("utf-8-sig", errors="replace").strip()


class CaptionedFolder(RealDataBuilder):
    """Images in a folder tree with same-stem .txt captions."""

    name = "captioned_folder"

    def _iter_raw(self) -> Iterator[tuple[str, str | None, str | None]]:
        root = os.path.abspath(self.source_path)
        if not os.path.isdir(root):
            raise ValueError(f"captioned_folder: data.path {self.source_path!r} is not a directory")
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
        if not files:
            raise ValueError(f"captioned_folder: no image files ({', '.join(_exts())}) under {root!r}")
        for path in files:
            key = os.path.relpath(path, root)
            caption = read_caption_file(os.path.splitext(path)[0] + ".txt")
            yield key, path, caption


def _exts() -> list[str]:
    from dalle.data.images import IMAGE_EXTENSIONS

    return list(IMAGE_EXTENSIONS)


class CaptionedCsv(RealDataBuilder):
    """Images listed in a CSV/TSV of path,caption rows."""

    name = "captioned_csv"

    def _iter_raw(self) -> Iterator[tuple[str, str | None, str | None]]:
        path = os.path.abspath(self.source_path)
        if not os.path.isfile(path):
            raise ValueError(f"captioned_csv: data.path {self.source_path!r} is not a file")
        base = os.path.dirname(path)
        delimiter = "," if path.lower().endswith(".csv") else "\t"
        image_col = self.options.get("image_column") or "path"
        caption_col = self.options.get("caption_column") or "caption"
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f, delimiter=delimiter)
            img_i, cap_i = 0, 1
            for line, row in enumerate(reader, start=1):
                where = f"{os.path.basename(path)}:{line}"
                if line == 1:
                    lowered = [c.strip().lower() for c in row]
                    if image_col.lower() in lowered and caption_col.lower() in lowered:
                        img_i, cap_i = lowered.index(image_col.lower()), lowered.index(caption_col.lower())
                        continue
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(img_i, cap_i):
                    self.stats.skip(f"{where} ({len(row)} columns)", "bad_row")
                    continue
                rel = row[img_i].strip()
                image = rel if os.path.isabs(rel) else os.path.join(base, rel)
                if not os.path.isfile(image):
                    self.stats.skip(f"{where} {rel}", "missing_image")
                    continue
                yield f"{line:09d}:{rel}", image, row[cap_i]
