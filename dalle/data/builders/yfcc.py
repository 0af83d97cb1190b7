"""tfds builder for OpenAI's CLIP subset of YFCC100M, joined with the YFCC100M metadata, images downloaded
beforehand into `images_dir` (the `yfcc100m` data source).

Inputs (local files only, plain or .bz2):

* `data.path`: the subset list `yfcc100m_subset_data.tsv` of openai/CLIP (data/yfcc100m.md): 14,829,396 rows of
  `line number<TAB>photo id<TAB>photo hash`, no header, "the first three columns in the dataset's metadata TSV".
* `data.yfcc_metadata`: the YFCC100M metadata `yfcc100m_dataset` (Thomee et al., "YFCC100M: The New Data in
  Multimedia Research", CACM 59(2), 2016; the Multimedia Commons release), one row per photo/video, 25 columns
  (0-based): 0 line number, 1 photo/video id, 2 photo/video hash, 3 user NSID, 4 user nickname, 5 date taken,
  6 date uploaded, 7 capture device, 8 title, 9 description, 10 user tags, 11 machine tags, 12 longitude,
  13 latitude, 14 accuracy, 15 page URL, 16 download URL, 17 license name, 18 license URL, 19 server id,
  20 farm id, 21 secret, 22 secret original, 23 original extension, 24 marker (0 = photo, 1 = video). The
  Yahoo Webscope files `yfcc100m_dataset-N` lack columns 0 and 2 (23 columns) and are refused with a message.

The join is on the photo id: metadata rows whose id is in the subset list and whose marker is 0 (photo) are
kept, in metadata order; the key of an example is its photo id. The image is found under `images_dir` (searched
recursively) by `naming`: `photo_id` (file stem = the photo id), `hash` (stem = the photo hash, as in OpenAI's list
and the AWS image bucket) or `basename` (stem = the download URL's last path component without extension).

The caption (`caption_of`) is made from the title and the description, both stored URL-encoded (`+` for spaces):
each is URL-decoded, stripped of HTML tags, HTML-unescaped and whitespace-collapsed; a title that is a camera's
default file name (IMG_1234, DSC01234, P1010001, ...; `CAMERA_DEFAULT`) is dropped. Then: title and description
-> "title. description" (no extra "." when the title already ends in punctuation; just the title when the
description repeats it); only one of them -> that one; neither -> "" (counted as `empty_caption`). Captions are not
cut here: data.max_caption_chars applies when the text is normalized (dalle.data.text), like every source.

Counted in the build statistics: `bad_row` (a row of either file that cannot be parsed), `video` (subset ids that
are videos), `missing_metadata` (subset ids with no metadata row), `missing_image` (no downloaded file), plus the
image problems of dalle.data.images. Row-level counts are taken in one pass only, although the metadata is read
once per split (and once to assign splits): keep it uncompressed, or pre-filtered to the subset, to build faster.
"""

from __future__ import annotations

import bz2
import html
import logging
import os
import re
import urllib.parse
from typing import IO, Any, Iterator

import numpy as np

from dalle.data.builders._real import RealDataBuilder
from dalle.data.images import BuildStats, is_image_file

log = logging.getLogger(__name__)

IMAGE_NAMINGS = ("photo_id", "hash", "basename")  # kept equal to dalle.data.sources.yfcc.IMAGE_NAMINGS

# The metadata layout (see the module docstring).
NUM_COLUMNS = 25
COL_ID, COL_HASH, COL_TITLE, COL_DESCRIPTION, COL_DOWNLOAD_URL, COL_MARKER = 1, 2, 8, 9, 16, 24
WEBSCOPE_COLUMNS = 23

# A camera's default file name as a title says nothing about the picture: an optional camera prefix (IMG, DSC,
# DSCN, DSCF, _MG, CIMG, PICT, SAM, GOPR, DCP, P, PA.., ...), digits with separators (IMG-20140101-WA0001 too) and
# an optional image extension. Bare numbers (dates, counters such as 100_1234) match as well.
CAMERA_DEFAULT = re.compile(
    r"^(?:img|image|imag|dscn|dscf|dsc|_dsc|_mg|cimg|pict|pic|sam|gopr|dcp|dji|hpim|mvc|sdc|wp|p[a-c]?|s)?"
    r"[\s_\-]*\d+(?:[\s_\-.]*(?:wa)?\d+)*"
    r"(?:\.(?:jpe?g|png|gif|tiff?|bmp|heic|raw|cr2|nef|dng|orf|arw))?$",
    re.IGNORECASE,
)
_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>", re.DOTALL)


def clean_text(raw: str) -> str:
    """A title or description as text: URL-decoded ('+' -> space), HTML tags removed, entities unescaped,
    whitespace collapsed. Tags are removed before unescaping, so an escaped `&lt;b&gt;` stays visible text."""
    text = urllib.parse.unquote_plus(raw, errors="replace")
    text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    return " ".join(text.split())


def is_camera_default(title: str) -> bool:
    return bool(CAMERA_DEFAULT.match(title.strip()))


def caption_of(raw_title: str, raw_description: str) -> str:
    """The caption of one photo (rule in the module docstring); "" when neither field says anything."""
    title = clean_text(raw_title)
    if is_camera_default(title):
        title = ""
    description = clean_text(raw_description)
    if title and description:
        if description.casefold() == title.casefold():
            return title
        sep = " " if title[-1] in ".!?:;" else ". "
        return title + sep + description
    return title or description


def image_stem(photo_id: str, photo_hash: str, download_url: str, naming: str) -> str:
    """The file stem under which the downloader saved this photo's image."""
    if naming == "photo_id":
        return photo_id
    if naming == "hash":
        return photo_hash.lower()
    if naming == "basename":
        return os.path.splitext(os.path.basename(urllib.parse.urlparse(download_url).path))[0]
    raise ValueError(f"data.yfcc_image_naming = {naming!r} is not one of {', '.join(IMAGE_NAMINGS)}")


def index_images(images_dir: str, naming: str) -> dict[str, str]:
    """stem -> path of every image under images_dir (stems lowercased for `hash`: hex digests)."""
    if not os.path.isdir(images_dir):
        raise ValueError(f"yfcc100m: data.images_dir {images_dir!r} is not a directory")
    table: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames.sort()
        for f in sorted(filenames):
            if is_image_file(f):
                stem = os.path.splitext(f)[0]
                table.setdefault(stem.lower() if naming == "hash" else stem, os.path.join(dirpath, f))
    return table


def _open_text(path: str) -> IO[str]:
    """Lines split on "\\n" only (a stray "\\r" must not split a row); .bz2 decompressed on the fly."""
    if path.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8", errors="replace", newline="\n")
    return open(path, encoding="utf-8", errors="replace", newline="\n")


def _require_file(path: str, key: str) -> None:
    if not path or not os.path.isfile(path):
        raise ValueError(f"yfcc100m: {key} {path!r} is not a file")


def _is_header(line_no: int, fields: list[str]) -> bool:
    return line_no == 1 and not fields[0].strip().isdigit()


def tsv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, tab-separated fields) of a plain or .bz2 TSV, blank lines and a header row skipped."""
    with _open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if not _is_header(line_no, fields):
                yield line_no, fields


def load_subset(path: str) -> tuple[np.ndarray, list[str]]:
    """(sorted unique photo ids of the subset list, `file:line` of its unparsable rows). A sorted int64 array
    (about 120 MB for the full list) instead of a Python set (about 1 GB)."""
    _require_file(path, "data.path")
    ids: list[int] = []
    bad: list[str] = []
    name = os.path.basename(path)
    for line_no, fields in tsv_rows(path):
        if len(fields) < 2 or not fields[1].strip().isdigit():
            bad.append(f"{name}:{line_no}")
            continue
        ids.append(int(fields[1]))
    return np.unique(np.asarray(ids, np.int64)), bad


class Yfcc100mSubset(RealDataBuilder):
    """YFCC100M, OpenAI's CLIP subset: photos with captions from their titles and descriptions."""

    name = "yfcc100m_subset"

    @classmethod
    def from_data_config(cls, data_config: Any) -> "Yfcc100mSubset":
        builder = super().from_data_config(data_config)
        builder.options["yfcc_metadata"] = data_config.get("yfcc_metadata", "")
        builder.options["yfcc_image_naming"] = data_config.get("yfcc_image_naming", "photo_id")
        return builder

    def _cached(self, name: str, make):
        """Inputs read once per builder although `_iter_raw` runs once per split (plus the split assignment)."""
        cache = getattr(self, "_yfcc_cache", None)
        if cache is None:
            cache = self._yfcc_cache = {}
        if name not in cache:
            cache[name] = make()
        return cache[name]

    def _iter_raw(self) -> Iterator[tuple[str, str | None, str | None]]:
        meta_path = self.options.get("yfcc_metadata") or ""
        naming = self.options.get("yfcc_image_naming") or "photo_id"
        if naming not in IMAGE_NAMINGS:
            raise ValueError(f"data.yfcc_image_naming = {naming!r} is not one of {', '.join(IMAGE_NAMINGS)}")
        _require_file(self.source_path or "", "data.path")
        _require_file(meta_path, "data.yfcc_metadata")
        ids, bad_subset_rows = self._cached("subset", lambda: load_subset(self.source_path))
        images = self._cached(f"images:{naming}",
                              lambda: index_images(self.options.get("images_dir") or "", naming))
        # Row-level problems are counted in the first pass that fills this BuildStats only (one pass per split).
        count = getattr(self, "_yfcc_counted_for", None) is not self.stats
        stats: BuildStats = self.stats
        if count:
            for where in bad_subset_rows:
                stats.skip(where, "bad_row")
        seen = np.zeros(len(ids), bool)
        name = os.path.basename(meta_path)
        for line_no, fields in tsv_rows(meta_path):
            if len(fields) != NUM_COLUMNS or not fields[COL_ID].strip().isdigit() \
                    or fields[COL_MARKER].strip() not in ("0", "1"):
                if line_no == 1 and len(fields) == WEBSCOPE_COLUMNS:
                    raise ValueError(
                        f"yfcc100m: data.yfcc_metadata {meta_path!r} has {WEBSCOPE_COLUMNS} columns (the Yahoo "
                        f"Webscope layout, no line number or hash); use the {NUM_COLUMNS}-column "
                        f"yfcc100m_dataset file whose first three columns match the subset list")
                if count:
                    stats.skip(f"{name}:{line_no}", "bad_row")
                continue
            photo_id = fields[COL_ID].strip()
            i = int(ids.searchsorted(int(photo_id)))
            if i >= len(ids) or ids[i] != int(photo_id):
                continue  # not in the subset
            seen[i] = True
            if fields[COL_MARKER].strip() == "1":
                if count:
                    stats.skip(photo_id, "video")
                continue
            stem = image_stem(photo_id, fields[COL_HASH].strip(), fields[COL_DOWNLOAD_URL].strip(), naming)
            yield photo_id, images.get(stem), caption_of(fields[COL_TITLE], fields[COL_DESCRIPTION])
        if count:
            missing = int(len(ids) - seen.sum())
            if missing:
                stats.skipped["missing_metadata"] += missing
                log.warning("yfcc100m: %d photo ids of %s have no row in %s", missing, self.source_path, meta_path)
            self._yfcc_counted_for = stats
