"""`dalle data`: builds the tfds dataset a config names, and opens built datasets for the other data jobs.

    dalle data --config configs/folder_data.py --config.data.path=/photos --config.data.data_dir=/tmp/tfds

`data.source` names a `DataSource` (dalle/data/sources/: shapes, folder, csv, webdataset, parquet, cc_tsv,
yfcc100m, emoji, or one registered by user code), which makes the tfds builder. Real-data builds print and store their statistics (kept,
skipped by reason, converted) in `build_stats.json` beside the dataset and in its tfds metadata.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from ml_collections import ConfigDict

from dalle import registry
from dalle.cli.args import Parser
from dalle.data import sources
from dalle.data.npm import NpmError

log = logging.getLogger(__name__)


def make_builder(data_config: ConfigDict):
    """The (unprepared) tfds builder of the configured source, for building or reading."""
    source = sources.of(data_config)
    if not source.is_tfds:
        raise ValueError(f"data.source = {data_config.source!r} is not a tfds dataset "
                         f"(tfds sources: {', '.join(sources.buildable())})")
    return registry.resolve(source.builder)(data_config)


def builder_name(data_config: ConfigDict) -> str:
    """The tfds name of the dataset a config reads (for seqio TfdsDataSource and error messages)."""
    source = sources.of(data_config)
    if not source.is_tfds:
        raise ValueError(f"data.source = {data_config.source!r} is not a tfds dataset")
    return source.tfds_name


def load_builder(data_config: ConfigDict):
    """The prepared tfds builder of the configured dataset; raises naming the command to run when it is not built."""
    builder = make_builder(data_config)
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
    source = sources.of(data_config)
    if not source.is_tfds:
        raise ValueError(f"data.source = {data_config.source!r} cannot be built by `dalle data` "
                         f"(buildable: {', '.join(sources.buildable())})")
    if source.build is not None:
        return registry.resolve(source.build)(data_config)
    return build_tfds(data_config)


def build_tfds(data_config: ConfigDict) -> dict[str, Any]:
    """The generic build of a tfds source whose builder keeps `stats` (dalle.data.builders._real): checks the
    source's `build_needs`, prepares the dataset, and stores the statistics in build_stats.json."""
    import tensorflow_datasets as tfds

    source = sources.of(data_config)
    builder = make_builder(data_config)
    if builder.is_prepared():
        stats = dict(builder.info.metadata.get("build_stats", {}))
        log.info("%s already built in %s", builder.name, builder.data_dir)
        return {"source": data_config.source, "already_built": True, "data_dir": builder.data_dir, **stats}
    for key in source.build_needs:
        if not data_config.get(key, ""):
            raise ValueError(f"data.source = {data_config.source!r}: building needs data.{key}")
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
    parser = Parser(prog="dalle data", description="Build the tfds dataset a config names.", takes_config=True,
                    examples="dalle data --config emoji --config.data.cache_dir=~/.cache/dalle/npm")
    parser.add_argument("--config", required=True, help="path/to/config.py[:variant]")
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_lib.load_config(args.config, overrides)
        result = build_dataset(config.data)
    except (config_lib.ConfigError, ValueError, FileNotFoundError, NpmError) as e:
        print(f"dalle data: error: {e}", file=sys.stderr)
        return 2
    problems = result.pop("problems", [])
    print(json.dumps(result, indent=2, sort_keys=True))
    if problems:
        print(f"first {len(problems)} problems (all in build_stats.json):", file=sys.stderr)
        for where, reason in problems:
            print(f"  {reason}: {where}", file=sys.stderr)
    return 0
