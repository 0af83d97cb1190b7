"""tfds builders for img2dataset output, the usual form of CC3M / CC12M / LAION subsets.

webdataset: `.tar` shards whose members are grouped by key (`000123.jpg`, `000123.txt`, `000123.json`), read with
the standard library's `tarfile` (no webdataset dependency). parquet: files with an image-bytes column (`jpg` for
img2dataset, or `image` / `{"bytes": ...}` structs as in Hugging Face exports) and a caption column, read with
pyarrow in record batches. `source_path` is a shard file, a directory (all shards in it, sorted) or a glob.
A truncated or unreadable shard is counted (`corrupt_shard`) and the examples read before the damage are kept.
Rows img2dataset marks as failed (`status` != "success") are counted as `download_failed`.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from typing import Iterator

from dalle.data.builders._real import RealDataBuilder
from dalle.data.images import IMAGE_EXTENSIONS

_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "image_bytes", "img", "bytes")


def list_shards(source_path: str, ext: str) -> list[str]:
    """Shard files named by a file, a directory or a glob, sorted; raises naming the path when there are none."""
    if os.path.isdir(source_path):
        files = sorted(glob.glob(os.path.join(source_path, "**", f"*{ext}"), recursive=True))
    elif any(ch in source_path for ch in "*?["):
        files = sorted(glob.glob(source_path, recursive=True))
    else:
        files = [source_path] if os.path.isfile(source_path) else []
    if not files:
        raise ValueError(f"data.path {source_path!r}: no {ext} files found")
    return files


def _split_member(name: str) -> tuple[str, str]:
    """webdataset convention: key = path up to the first dot of the basename, extension = the rest."""
    dirname, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(dirname, stem) if dirname else stem), ext.lower()


class Img2datasetWebdataset(RealDataBuilder):
    """img2dataset webdataset shards (.tar with key.jpg + key.txt)."""

    name = "img2dataset_webdataset"

    def _iter_raw(self) -> Iterator[tuple[str, bytes | None, str | None]]:
        for shard in list_shards(self.source_path, ".tar"):
            shard_name = os.path.basename(shard)
            current: str | None = None
            sample: dict[str, bytes] = {}
            try:
                with tarfile.open(shard, "r|*") as tar:  # streaming: works for huge shards
                    for member in tar:
                        if not member.isfile():
                            continue
                        key, ext = _split_member(member.name)
                        if key != current:
                            if current is not None:
                                yield self._sample(shard_name, current, sample)
                            current, sample = key, {}
                        f = tar.extractfile(member)
                        data = f.read() if f is not None else b""
                        if len(data) != member.size:  # streaming tarfile returns short reads at a cut
                            raise tarfile.ReadError(f"member {member.name!r} is cut short "
                                                    f"({len(data)} of {member.size} bytes)")
                        sample[ext] = data
            except (tarfile.TarError, OSError, EOFError) as e:
                self.stats.skip(f"{shard} ({type(e).__name__}: {e})", "corrupt_shard")
                current = None  # the partial sample read at the damage is dropped
            if current is not None:
                yield self._sample(shard_name, current, sample)

    def _iter_keys(self) -> Iterator[str]:
        for shard in list_shards(self.source_path, ".tar"):
            try:
                with tarfile.open(shard, "r:*") as tar:  # random access: seeks over the member data
                    names = [m.name for m in tar.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError, EOFError):
                names = []
                try:  # a damaged shard: the members before the damage
                    with tarfile.open(shard, "r|*") as tar:
                        for m in tar:
                            names.append(m.name)
                except (tarfile.TarError, OSError, EOFError):
                    pass
            seen = []
            for name in names:
                key = _split_member(name)[0]
                if not seen or seen[-1] != key:
                    seen.append(key)
            yield from (f"{os.path.basename(shard)}/{k}" for k in seen)

    def _sample(self, shard: str, key: str, sample: dict[str, bytes]) -> tuple[str, bytes | None, str | None]:
        image = next((sample[e] for e in sample if "." + e.split(".")[-1] in IMAGE_EXTENSIONS), None)
        caption = None
        if "txt" in sample:
            caption = sample["txt"].decode("utf-8", errors="replace")
        elif "json" in sample:
            try:
                caption = json.loads(sample["json"]).get("caption")
            except (ValueError, AttributeError):
                caption = None
        return f"{shard}/{key}", image, caption


class Img2datasetParquet(RealDataBuilder):
    """Parquet files with image bytes and captions (img2dataset output_format=parquet, HF exports)."""

    name = "img2dataset_parquet"

    def _iter_raw(self) -> Iterator[tuple[str, bytes | None, str | None]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        caption_col = self.options.get("caption_column") or "caption"
        wanted_image = self.options.get("image_column") or ""
        for path in list_shards(self.source_path, ".parquet"):
            name = os.path.basename(path)
            try:
                pf = pq.ParquetFile(path)
                columns = pf.schema_arrow.names
                image_col = wanted_image or next((c for c in _IMAGE_COLUMNS if c in columns), "")
                if not image_col or image_col not in columns:
                    raise ValueError(f"{path}: no image column (looked for {wanted_image or _IMAGE_COLUMNS}); "
                                     f"columns are {columns}")
                if caption_col not in columns:
                    raise ValueError(f"{path}: no caption column {caption_col!r}; columns are {columns}")
                read = [image_col, caption_col] + (["status"] if "status" in columns else [])
                row = 0
                for batch in pf.iter_batches(columns=read, batch_size=256):
                    data = batch.to_pydict()
                    for i in range(batch.num_rows):
                        key = f"{name}/{row:09d}"
                        row += 1
                        status = data["status"][i] if "status" in data else "success"
                        if status not in (None, "success"):
                            self.stats.skip(key, "download_failed")
                            continue
                        image = data[image_col][i]
                        if isinstance(image, dict):
                            image = image.get("bytes")
                        yield key, image, data[caption_col][i]
            except (OSError, pa.ArrowException) as e:
                self.stats.skip(f"{path} ({type(e).__name__}: {e})", "corrupt_shard")
