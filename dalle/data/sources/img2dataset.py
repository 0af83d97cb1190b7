"""`webdataset` and `parquet`: shards written by img2dataset (https://github.com/rom1504/img2dataset), built
offline by dalle.data.builders.img2dataset."""

from __future__ import annotations

from dalle.data.sources import DataSource, register_data_source

register_data_source(DataSource(
    name="webdataset",
    description="img2dataset webdataset shards: .tar files of image + .txt caption (data.path: a dir or glob)",
    builder="dalle.data.builders.img2dataset:Img2datasetWebdataset.from_data_config",
    tfds_name="img2dataset_webdataset",
    build_needs=("path",),
))

register_data_source(DataSource(
    name="parquet",
    description="img2dataset parquet shards with image bytes and captions (data.path: a dir or glob)",
    builder="dalle.data.builders.img2dataset:Img2datasetParquet.from_data_config",
    tfds_name="img2dataset_parquet",
    build_needs=("path",),
))
