"""`cc_tsv`: a Conceptual Captions TSV (url, caption) with images downloaded beforehand, built offline by
dalle.data.builders.cc."""

from __future__ import annotations

from typing import Iterator

from ml_collections import ConfigDict

from dalle.data.sources import DataSource, register_data_source

IMAGE_NAMINGS = ("index", "sha1", "md5", "basename")  # image file stem: row index | sha1(url) | md5(url) | url basename


def check(d: ConfigDict) -> Iterator[str]:
    if d.cc_image_naming not in IMAGE_NAMINGS:
        yield f"data.cc_image_naming = {d.cc_image_naming!r} is not one of {', '.join(IMAGE_NAMINGS)}"


register_data_source(DataSource(
    name="cc_tsv",
    description="Conceptual Captions TSV (url, caption; data.path) with the images in data.images_dir",
    builder="dalle.data.builders.cc:CcTsv.from_data_config",
    tfds_name="cc_tsv",
    build_needs=("path", "images_dir"),
    check=check,
))
