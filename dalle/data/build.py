"""`dalle data`: builds the tfds dataset a config names, and opens built datasets for the other data jobs.

    dalle data --config configs/folder_data.py --config.data.path=/photos --config.data.data_dir=/tmp/tfds

Sources (`data.source`): shapes (the captioned-shapes world, dalle.data.builders.shapes.build_shapes), folder, csv,
webdataset, parquet, cc_tsv (dalle.data.builders.*). Real-data builds print and store their statistics (kept,
skipped by reason, converted) in `build_stats.json` beside the dataset and in its tfds metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from ml_collections import ConfigDict

log = logging.getLogger(__name__)

REAL_SOURCES = ("folder", "csv", "webdataset", "parquet", "cc_tsv")
SHAPES_BUILDER = "captioned_shapes"


def _builder_class(source: str):
    from dalle.data.builders import cc, folder, img2dataset

    table = {
        "folder": folder.CaptionedFolder,
        "csv": folder.CaptionedCsv,
        "webdataset": img2dataset.Img2datasetWebdataset,
        "parquet": img2dataset.Img2datasetParquet,
        "cc_tsv": cc.CcTsv,
    }
    if source not in table:
        raise ValueError(f"data.source = {source!r} has no real-data builder (known: {sorted(table)})")
    return table[source]


def builder_name(data_config: ConfigDict) -> str:
    """The tfds name of the dataset a config reads (for seqio TfdsDataSource and error messages)."""
    if data_config.source == "shapes":
        return SHAPES_BUILDER
    return _builder_class(data_config.source).name


def make_builder(data_config: ConfigDict):
    """A real-data builder configured from the `data` section (for building or reading)."""
    cls = _builder_class(data_config.source)
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


def load_builder(data_config: ConfigDict):
    """The prepared tfds builder of the configured dataset; raises naming the command to run when it is not built."""
    import tensorflow_datasets as tfds

    if data_config.source == "shapes":
        from dalle.data.builders import shapes as shapes_builder

        builder = shapes_builder.CaptionedShapes(config=shapes_builder.make_config(data_config),
                                                 data_dir=data_config.data_dir or None)
    elif data_config.source in REAL_SOURCES:
        builder = make_builder(data_config)
    else:
        raise ValueError(f"data.source = {data_config.source!r} is not a tfds dataset")
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {builder.name!r} is not built in data_dir {data_config.data_dir or '<tfds default>'!r}: "
            f"run `dalle data --config ...` first")
    built_size = builder.info.metadata.get("image_size") if builder.info.metadata is not None else None
    if built_size is not None and int(built_size) != int(data_config.image_size):
        raise ValueError(f"dataset {builder.name!r} in {builder.data_dir} was built at image_size {built_size}, "
                         f"but data.image_size = {data_config.image_size}")
    return builder


def build_dataset(data_config: ConfigDict) -> dict[str, Any]:
    """Builds the configured dataset (a no-op when already built); returns the build statistics."""
    import tensorflow_datasets as tfds

    if data_config.source == "shapes":
        from dalle.data.builders import shapes as shapes_builder

        start = time.time()
        builder = shapes_builder.build_shapes(data_config, data_config.data_dir or None)
        splits = {name: info.num_examples for name, info in builder.info.splits.items()}
        return {"source": "shapes", "data_dir": builder.data_dir, "splits": splits,
                "seconds": round(time.time() - start, 2)}
    if data_config.source not in REAL_SOURCES:
        raise ValueError(f"data.source = {data_config.source!r} cannot be built by `dalle data` "
                         f"(buildable: shapes, {', '.join(REAL_SOURCES)})")
    builder = make_builder(data_config)
    if not builder.is_prepared():
        if not data_config.path:
            raise ValueError(f"data.source = {data_config.source!r}: building needs data.path (the input files)")
        if data_config.source == "cc_tsv" and not data_config.get("images_dir", ""):
            raise ValueError("data.source = 'cc_tsv': building needs data.images_dir (the downloaded images)")
    if builder.is_prepared():
        stats = dict(builder.info.metadata.get("build_stats", {}))
        log.info("%s already built in %s", builder.name, builder.data_dir)
        return {"source": data_config.source, "already_built": True, "data_dir": builder.data_dir, **stats}
    start = time.time()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    stats = builder.stats.to_dict()
    builder.stats.write(os.path.join(builder.data_dir, "build_stats.json"))
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    log.info("%s: %s", builder.name, builder.stats.summary())
    return {"source": data_config.source, "data_dir": builder.data_dir, "splits": splits,
            "seconds": round(time.time() - start, 2), **stats}


def main(argv: Sequence[str]) -> int:
    from dalle import config as config_lib

    overrides, rest = config_lib.split_config_args(argv)
    parser = argparse.ArgumentParser(prog="dalle data", description="Build the tfds dataset a config names.")
    parser.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_lib.load_config(args.config, overrides)
        result = build_dataset(config.data)
    except (config_lib.ConfigError, ValueError, FileNotFoundError) as e:
        print(f"dalle data: error: {e}", file=sys.stderr)
        return 2
    problems = result.pop("problems", [])
    print(json.dumps(result, indent=2, sort_keys=True))
    if problems:
        print(f"first {len(problems)} problems (all in build_stats.json):", file=sys.stderr)
        for where, reason in problems:
            print(f"  {reason}: {where}", file=sys.stderr)
    return 0
