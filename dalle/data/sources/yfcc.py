"""`yfcc100m`: OpenAI's CLIP subset of YFCC100M (openai/CLIP data/yfcc100m.md) joined with the YFCC100M metadata
(Thomee et al., "YFCC100M: The New Data in Multimedia Research", CACM 59(2), 2016), images downloaded beforehand;
built offline by dalle.data.builders.yfcc."""

from __future__ import annotations

from typing import Any, Iterator

from ml_collections import ConfigDict

from dalle.data.sources import DataSource, register_data_source

# Image file stem under data.images_dir: the photo id | the photo hash (OpenAI's list, the AWS image names) |
# the download URL's basename (`<id>_<secret>.jpg` on Flickr's static servers).
IMAGE_NAMINGS = ("photo_id", "hash", "basename")


def defaults() -> dict[str, Any]:
    return {
        "yfcc_metadata": "",  # yfcc100m: the 25-column metadata TSV `yfcc100m_dataset` (plain or .bz2)
        "yfcc_image_naming": "photo_id",  # yfcc100m: image file stem = photo id | photo hash | URL basename
    }


def check(d: ConfigDict) -> Iterator[str]:
    if d.yfcc_image_naming not in IMAGE_NAMINGS:
        yield f"data.yfcc_image_naming = {d.yfcc_image_naming!r} is not one of {', '.join(IMAGE_NAMINGS)}"


register_data_source(DataSource(
    name="yfcc100m",
    description=("YFCC100M, OpenAI's CLIP subset (data.path: yfcc100m_subset_data.tsv) joined with the metadata "
                 "(data.yfcc_metadata), images in data.images_dir"),
    builder="dalle.data.builders.yfcc:Yfcc100mSubset.from_data_config",
    tfds_name="yfcc100m_subset",
    build_needs=("path", "yfcc_metadata", "images_dir"),
    check=check,
    defaults=defaults,
))
