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
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from dalle import sharding

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
    # The defaults cover the common state {"params", "opt_state", "step"}: a task defines `init_params`,
    # `partition_rules` and sets `self.tx`; a task with another state overrides both methods below.
    tx: optax.GradientTransformation

    def init_state(self, rng: jax.Array) -> State:
        """Fresh state. Pure and jittable: the loop runs it under `jax.jit(out_shardings=...)` so a big model is
        created already sharded, and under `jax.eval_shape` for abstract shapes (dry runs, restores)."""
        params = self.init_params(rng)
        return {"params": params, "opt_state": self.tx.init(params), "step": jnp.zeros((), jnp.int32)}

    def state_shardings(self, abstract_state: State, mesh: Mesh) -> Any:
        """NamedSharding per state leaf: params by the partition rules, optimizer state like its params, the
        step replicated."""
        p = self.param_shardings(abstract_state["params"], mesh)
        return {"params": p,
                "opt_state": sharding.derived_state_shardings(abstract_state["opt_state"], abstract_state["params"],
                                                              p, mesh),
                "step": sharding.replicated(mesh)}

    def init_params(self, rng: jax.Array) -> Any:
        """Fresh model params, for the default `init_state`."""
        raise NotImplementedError(f"{type(self).__name__} defines neither init_state nor init_params")

    def partition_rules(self) -> sharding.ParamRules:
        """Regex rules over param paths naming each param's logical axes (dalle.sharding)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither state_shardings nor partition_rules")

    def logical_rules(self) -> tuple:
        """Logical -> mesh axes: the config's `mesh.logical_rules`, then the defaults (as the loop uses)."""
        return sharding.rules_from_config(self.config)

    def param_shardings(self, abstract_params: Any, mesh: Mesh) -> Any:
        """NamedSharding per param of one params tree (arrays or ShapeDtypeStructs) of this task."""
        return sharding.param_shardings(abstract_params, self.partition_rules(), self.logical_rules(), mesh)

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
