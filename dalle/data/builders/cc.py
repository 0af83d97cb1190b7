"""tfds builder for Conceptual Captions style TSVs (`url<TAB>caption`, CC12M; or `caption<TAB>url`, CC3M) whose
images were downloaded beforehand into `images_dir`.

Which column is the URL is decided per row (the one starting with http:// or https://), so both layouts and a
header row work. The image of a row is found by `naming`: `index` (file stem = the row's 0-based index among
data rows, zero padding allowed: `000123.jpg`), `sha1` / `md5` (stem = hex digest of the URL), or `basename`
(stem = the URL's last path component without extension). Rows without a downloaded image are counted as
`missing_image`; rows with no URL as `bad_row`.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from typing import Iterator

from dalle.data.builders._real import RealDataBuilder
from dalle.data.images import is_image_file


def _is_url(text: str) -> bool:
    t = text.strip().lower()
    return t.startswith("http://") or t.startswith("https://")


def image_stem(url: str, index: int, naming: str) -> str:
    """The file stem under which the downloader saved this row's image."""
    if naming == "index":
        return str(index)
    if naming == "sha1":
        return hashlib.sha1(url.encode("utf-8")).hexdigest()
    if naming == "md5":
        return hashlib.md5(url.encode("utf-8")).hexdigest()
    if naming == "basename":
        return os.path.splitext(os.path.basename(urllib.parse.urlparse(url).path))[0]
    raise ValueError(f"data.cc_image_naming = {naming!r} is not one of index, sha1, md5, basename")


def index_images(images_dir: str, naming: str) -> dict[str, str]:
    """stem -> path of every image under images_dir (for `index`, stems are normalized as integers)."""
    if not os.path.isdir(images_dir):
        raise ValueError(f"cc_tsv: data.images_dir {images_dir!r} is not a directory")
    table: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames.sort()
        for f in sorted(filenames):
            if not is_image_file(f):
                continue
            stem = os.path.splitext(f)[0]
            if naming == "index":
                if not stem.isdigit():
                    continue
                stem = str(int(stem))
            table.setdefault(stem, os.path.join(dirpath, f))
    return table


class CcTsv(RealDataBuilder):
    """Conceptual Captions TSV (url + caption) with pre-downloaded images."""

    name = "cc_tsv"

    def _iter_raw(self) -> Iterator[tuple[str, str | None, str | None]]:
        path = self.source_path
        if not os.path.isfile(path):
            raise ValueError(f"cc_tsv: data.path {path!r} is not a file")
        naming = self.options.get("cc_image_naming") or "index"
        images = index_images(self.options.get("images_dir") or "", naming)
        index = 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("\t")
                if not line.strip():
                    continue
                urls = [i for i, x in enumerate(fields) if _is_url(x)]
                if not urls:
                    if line_no == 1 and any(x.strip().lower() in ("url", "caption") for x in fields):
                        continue  # header
                    self.stats.skip(f"{os.path.basename(path)}:{line_no}", "bad_row")
                    continue
                url = fields[urls[0]].strip()
                others = [x for i, x in enumerate(fields) if i != urls[0]]
                caption = others[0] if others else None
                row = index
                index += 1
                stem = image_stem(url, row, naming)
                yield f"{row:09d}", images.get(stem), caption
