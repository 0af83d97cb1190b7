"""The training data stream: host-local batches of token ids from the seqio tasks, with an exact, saveable position.

    it = token_batches(config, "train", batch_size=64, process_index=0, process_count=1, seed=0)
    batch = next(it)   # {"text_tokens": int32 [64, max_text_length], "image_tokens": int32 [64, image_length]}
    state = it.get_state(); ...; it.set_state(state)   # continues with exactly the batches that would follow

Epoch e reads the task with seed `epoch_seed(seed, e)` (files in a seeded order, seeded per-example randomness for
blank captions, seeded shuffle buffer) and this host's `seqio.ShardInfo(process_index, process_count)`. The
position is (epoch, batches read in that epoch): restoring rebuilds epoch e's pipeline and skips that many
batches, so resumption is exact; its cost grows with the position inside an epoch (the skipped examples are
still read and preprocessed), not with the epoch number. Incomplete final batches are dropped, so every host
yields the same number of batches per epoch only if its shard has as many full batches (seqio's even sharding).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
from ml_collections import ConfigDict

from dalle.train.task import DataIterator

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, stable 31-bit seed per (seed, epoch)."""
    return int((np.uint64(seed) * np.uint64(1_000_003) + np.uint64(epoch) * np.uint64(7919) + np.uint64(17))
               % np.uint64(2**31 - 1))


class EpochIterator(DataIterator):
    """Batches of a finite tf.data pipeline rebuilt per epoch, resumable by (epoch, batches read in it).

    Subclasses make epoch e's dataset (`_dataset(epoch, skip)`, already batched with drop_remainder and with `skip`
    batches skipped) and name what identifies the stream (`_identity()`: a restored position must match it)."""

    what = "stream"

    def __init__(self, split: str, batch_size: int, process_index: int, process_count: int, seed: int,
                 num_epochs: int | None = None):
        if batch_size <= 0:
            raise ValueError(f"batch_size = {batch_size} must be positive (per-host rows)")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index = {process_index} is not in [0, {process_count})")
        self.split = split
        self.batch_size = int(batch_size)
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.seed = int(seed)
        self.num_epochs = num_epochs
        self.epoch = 0
        self.index = 0  # batches already returned in this epoch
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _dataset(self, epoch: int, skip: int):
        raise NotImplementedError

    def _convert(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return batch

    def _identity(self) -> dict[str, Any]:
        return {}

    def __next__(self) -> dict[str, np.ndarray]:
        started_empty = False
        while True:
            if self._it is None:
                if self.num_epochs is not None and self.epoch >= self.num_epochs:
                    raise StopIteration
                self._it = self._dataset(self.epoch, self.index).as_numpy_iterator()
                started_empty = self.index == 0
            try:
                batch = next(self._it)
            except StopIteration:
                if started_empty and self.index == 0:
                    raise ValueError(
                        f"{self.what} split {self.split!r} has fewer than {self.batch_size} examples "
                        f"for host {self.process_index} of {self.process_count}: no full batch") from None
                self.epoch += 1
                self.index = 0
                self._it = None
                continue
            self.index += 1
            return self._convert(batch)

    # --- position -----------------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "split": self.split,
                "batch_size": self.batch_size, "process_index": self.process_index,
                "process_count": self.process_count, **self._identity()}

    def set_state(self, state: dict) -> None:
        """Restores a position from `get_state`; refuses one taken on a different stream (names what differs)."""
        mine = self.get_state()
        for key in mine:
            if key not in ("epoch", "index") and key in state and state[key] != mine[key]:
                raise ValueError(f"data position was saved with {key}={state[key]!r}, this stream has "
                                 f"{key}={mine[key]!r}: the saved position does not apply")
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or index < 0:
            raise ValueError(f"bad data position epoch={epoch} index={index}")
        self.epoch, self.index = epoch, index
        self._it = None


class SeqioDataIterator(EpochIterator):
    """Batches of a seqio task or mixture through a feature converter."""

    def __init__(self, task_name: str, sequence_length: dict[str, int], converter, split: str, batch_size: int,
                 process_index: int, process_count: int, seed: int, shuffle: bool, shuffle_buffer: int,
                 fingerprint: str = "", num_epochs: int | None = None):
        super().__init__(split, batch_size, process_index, process_count, seed, num_epochs)
        self.task_name = task_name
        self.what = f"task {task_name!r}"
        self.sequence_length = dict(sequence_length)
        self.converter = converter
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = int(shuffle_buffer)
        self.fingerprint = fingerprint

    def _identity(self) -> dict[str, Any]:
        return {"task": self.task_name, "fingerprint": self.fingerprint}

    def _dataset(self, epoch: int, skip: int):
        import seqio

        provider = seqio.get_mixture_or_task(self.task_name)  # its shuffle buffer is data.shuffle_buffer
        ds = provider.get_dataset(
            sequence_length=self.sequence_length,
            split=self.split,
            use_cached=False,
            shuffle=self.shuffle,
            seed=epoch_seed(self.seed, epoch),
            shard_info=seqio.ShardInfo(self.process_index, self.process_count),
            num_epochs=1,
        )
        ds = self.converter(ds, self.sequence_length)
        ds = ds.batch(self.batch_size, drop_remainder=True)
        if skip:
            ds = ds.skip(skip)
        return ds.prefetch(2)

    def _convert(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.int32) for k, v in batch.items()}


def token_batches(config: ConfigDict, split: str, batch_size: int, process_index: int, process_count: int,
                  seed: int, *, shuffle: bool | None = None, model_kind: str | None = None,
                  num_epochs: int | None = None) -> SeqioDataIterator:
    """This host's stream of token batches for `split` of the configured encoded data (see module docstring).

    `batch_size` is per host. Training (`split="train"`) uses the blanking task (or the mixture); other splits
    use the `_eval` task without blanking. `shuffle` defaults to True for train only; `num_epochs` None repeats
    forever. `model_kind` picks the feature converter (default from config.model.kind, else encoder-decoder).
    """
    from dalle.data import tasks

    data = config.data
    names = tasks.register_tasks(data, raw=False)
    if names.train is None:
        raise FileNotFoundError(
            f"no encoded data in data.encoded_dir = {data.encoded_dir!r}: run `dalle encode --config ...` first")
    vocab = config.model.get("image_vocab_size") if "model" in config else None
    if vocab is not None and names.codebook_size is not None and names.codebook_size > vocab:
        raise ValueError(f"data.encoded_dir = {data.encoded_dir!r} holds codes of a {names.codebook_size}-code image "
                         f"tokenizer, more than model.image_vocab_size = {vocab}: encode with the tokenizer the model "
                         f"is meant for, or set model.image_vocab_size = {names.codebook_size}")
    task = names.train if split == "train" else names.eval
    if model_kind is None:
        model_kind = config.model.kind if "model" in config else "encdec"
    return SeqioDataIterator(
        task_name=task,
        sequence_length=tasks.sequence_lengths(data, names.image_length),
        converter=tasks.feature_converter_for(model_kind),
        split=split,
        batch_size=batch_size,
        process_index=process_index,
        process_count=process_count,
        seed=seed,
        shuffle=(split == "train") if shuffle is None else shuffle,
        shuffle_buffer=data.get("shuffle_buffer", 10_000),
        fingerprint=tasks.fingerprint(data),
        num_epochs=num_epochs,
    )
