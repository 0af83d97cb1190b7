"""Image + caption batches of any data source, for the tasks that learn from pixels (VQGAN, CLIP) and for eval.

    it = image_batches(config.data, "train", batch_size=16, process_index=0, process_count=1)
    batch = next(it)   # {"image": uint8 [16, S, S, 3], "caption": object [16], ...the source's other fields}

A source that makes its own stream (the procedural shapes world) names it in `DataSource.image_batches`; every
other tfds source (folder, csv, webdataset, parquet, cc_tsv, emoji, ...) is read from its built dataset by
`TfdsImageIterator`: host-sharded, shuffled per epoch from data.seed for train, resumable exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ml_collections import ConfigDict

from dalle import registry
from dalle.data import sources
from dalle.data.pipeline import EpochIterator, epoch_seed
from dalle.train.task import DataIterator


class TfdsImageIterator(EpochIterator):
    """Batches of a built tfds split with an `image` feature: every scalar feature comes along (captions, ids)."""

    def __init__(self, data: ConfigDict, split: str, batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_examples: int | None = None, shuffle: bool | None = None,
                 num_epochs: int | None = None):
        super().__init__(split, batch_size, process_index, process_count, int(data.get("seed", 0)),
                         num_epochs if num_examples is None else 1)
        from dalle.data import build

        self.builder = build.load_builder(data)
        if split not in self.builder.info.splits:
            raise ValueError(f"dataset {self.builder.name!r} in {self.builder.data_dir} has no split {split!r} "
                             f"(splits: {', '.join(self.builder.info.splits)})")
        self.what = f"dataset {self.builder.name!r}"
        self.num_examples = num_examples
        self.shuffle = (split == "train" and num_examples is None) if shuffle is None else bool(shuffle)
        self.shuffle_buffer = int(data.get("shuffle_buffer", 10_000))
        self.keys = [k for k, f in self.builder.info.features.items()
                     if k == "image" or len(getattr(f, "shape", ()) or ()) == 0]

    def _identity(self) -> dict[str, Any]:
        return {"dataset": self.builder.info.full_name, "num_examples": self.num_examples}

    def _dataset(self, epoch: int, skip: int):
        import tensorflow as tf

        ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        if self.num_examples is not None:
            ds = ds.take(self.num_examples)
        ds = ds.shard(self.process_count, self.process_index)
        if self.shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed(self.seed, epoch), reshuffle_each_iteration=False)
        keys = self.keys
        ds = ds.map(lambda ex: {k: ex[k] for k in keys}, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(self.batch_size, drop_remainder=True)
        if skip:
            ds = ds.skip(skip)
        return ds.prefetch(2)

    def _convert(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for k, v in batch.items():
            v = np.asarray(v)
            out[k] = np.array([x.decode("utf-8") for x in v], dtype=object) if v.dtype == object else v
        return out


def image_batches(data: ConfigDict, split: str, batch_size: int, process_index: int = 0, process_count: int = 1,
                  num_examples: int | None = None) -> DataIterator:
    """This host's batches of `split` of the configured source (see the module docstring). `num_examples` None:
    train repeats forever, shuffled; otherwise one pass over the first `num_examples` (evaluation)."""
    source = sources.of(data)
    if source.image_batches is not None:
        return registry.resolve(source.image_batches)(data, split, batch_size, process_index, process_count,
                                                       num_examples=num_examples)
    if not source.is_tfds:
        raise ValueError(f"data.source = {data.source!r} holds image tokens, not images: training a VQGAN or "
                         f"CLIP needs the source the images came from (image sources: "
                         f"{', '.join(sources.buildable())})")
    return TfdsImageIterator(data, split, batch_size, process_index, process_count, num_examples=num_examples)


def split_size(data: ConfigDict, split: str) -> int:
    """Examples in `split` of the configured source (the shapes world's configured size; a built dataset's count)."""
    source = sources.of(data)
    if source.image_batches is not None and f"{split}_size" in data:
        return int(data[f"{split}_size"])
    from dalle.data import build

    splits = build.load_builder(data).info.splits
    return int(splits[split].num_examples) if split in splits else 0


def validation_batches(data: ConfigDict, batch_size: int, process_index: int = 0, process_count: int = 1
                       ) -> DataIterator | None:
    """One pass over the whole validation split, or None when it has fewer than `batch_size` images (a small
    folder): what the image tasks (VQGAN, dVAE) evaluate on."""
    n = split_size(data, "validation")
    if n < batch_size:
        return None
    return image_batches(data, "validation", batch_size, process_index, process_count, num_examples=n)
