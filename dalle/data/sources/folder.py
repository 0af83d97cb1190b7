"""`folder` (images with same-named .txt captions) and `csv` (a path,caption table): local files, built offline by
dalle.data.builders.folder."""

from __future__ import annotations

from dalle.data.sources import DataSource, register_data_source

register_data_source(DataSource(
    name="folder",
    description="a folder of images, each with a same-named .txt caption (data.path)",
    builder="dalle.data.builders.folder:CaptionedFolder.from_data_config",
    tfds_name="captioned_folder",
    build_needs=("path",),
))

register_data_source(DataSource(
    name="csv",
    description="a .csv/.tsv file of image paths and captions (data.path; data.image_column, data.caption_column)",
    builder="dalle.data.builders.folder:CaptionedCsv.from_data_config",
    tfds_name="captioned_csv",
    build_needs=("path",),
))
