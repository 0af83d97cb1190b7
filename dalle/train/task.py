"""What the one train loop (dalle/train/loop.py) needs from a model family.

A `Task` turns a validated config into pure functions over a *state* pytree (params, optimizer state, anything
else that must be checkpointed). The loop owns everything generic: the mesh, jit with in/out shardings and donated
state, gradient accumulation is the task's business (it knows its loss), the NaN/Inf guard, orbax checkpoints
with the data position and RNG, SIGTERM, metrics, TensorBoard and the progress bar.

Tasks: `dalle.train.tasks.dalle` (DalleBart / decoder-only), `dalle.train.tasks.vqgan`, `dalle.train.tasks.clip`.
"""

from __future__ import annotations

import abc
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh
from ml_collections import ConfigDict

Batch = Mapping[str, np.ndarray]  # host-local rows of one global batch
State = Any  # a pytree of arrays
Metrics = Mapping[str, jax.Array]


class DataIterator(abc.ABC):
    """An iterator over host-local batches whose position can be saved and restored exactly."""

    @abc.abstractmethod
    def __next__(self) -> Batch: ...

    def __iter__(self) -> "DataIterator":
        return self

    @abc.abstractmethod
    def get_state(self) -> dict:
        """JSON-serialisable position (e.g. {"epoch": 2, "index": 1280, "seed": 0})."""

    @abc.abstractmethod
    def set_state(self, state: dict) -> None: ...


class Task(abc.ABC):
    """One model family's training recipe."""

    def __init__(self, config: ConfigDict):
        self.config = config

    # --- state -----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def init_state(self, rng: jax.Array) -> State:
        """Fresh state. Pure and jittable: the loop runs it under `jax.jit(out_shardings=...)` so a big model is
        created already sharded, and under `jax.eval_shape` for abstract shapes (dry runs, restores)."""

    @abc.abstractmethod
    def state_shardings(self, abstract_state: State, mesh: Mesh) -> Any:
        """NamedSharding per state leaf, from the partition rules (dalle.sharding)."""

    def load_pretrained(self, state: State) -> State:
        """Hook for `finetune_from` / `encoder_init`: returns the state with published weights put in."""
        return state

    # --- steps -----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        """One optimizer step on a global batch. Pure and jittable. Metrics must include a scalar `loss`; the loop
        discards the new state when `loss` is not finite."""

    def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
        """Metrics on one validation batch (averaged by the loop)."""
        return {}

    # --- data ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        """This host's share of the training stream, `train.batch_size / process_count` rows per batch."""

    def eval_data(self, process_index: int, process_count: int) -> Iterator[Batch] | None:
        return None

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes/dtypes of one global batch, for ahead-of-time compilation (`dalle train --dry_run`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support --dry_run")

    # --- reporting -------------------------------------------------------------------------------------------
    def flops_per_example(self) -> float:
        """Analytic training FLOPs for one example (forward + backward), for MFU; 0 when unknown."""
        return 0.0

    def tokens_per_example(self) -> int:
        return 0

    def summaries(self, state: State, step: int) -> dict[str, np.ndarray]:
        """Images to log every `train.sample_every` steps: name -> uint8 [N, H, W, 3] (a grid is fine)."""
        return {}

    def export_params(self, state: State) -> tuple[Any, ConfigDict]:
        """(params, config) to save as a model checkpoint (dalle.model_dir) when training ends."""
        raise NotImplementedError
