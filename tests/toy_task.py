"""A tiny `Task` over the toy transformer, so the train loop is tested without the real models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.train import optim
from dalle.train.task import DataIterator, Task
from tests import toy_sharded

LENGTH = 6


class ToyData(DataIterator):
    """Batch i is a pure function of (seed, i); each process takes its rows. Position = next batch index."""

    def __init__(self, global_batch: int, process_index: int, process_count: int, seed: int = 0):
        self.global_batch, self.pi, self.pc, self.seed, self.index = global_batch, process_index, process_count, seed, 0

    def __next__(self):
        x, y = toy_sharded.data(self.seed * 100_003 + self.index, self.global_batch, LENGTH)
        rows = self.global_batch // self.pc
        self.index += 1
        sl = slice(self.pi * rows, (self.pi + 1) * rows)
        return {"x": x[sl], "y": y[sl], "caption": np.array(["host-only string"] * rows, dtype=object)}

    def get_state(self):
        return {"index": self.index, "seed": self.seed}

    def set_state(self, state):
        self.index, self.seed = int(state["index"]), int(state["seed"])


class ToyTask(Task):
    def __init__(self, config: ConfigDict, nan_steps=(), trainable=None, nan_grad_steps=()):
        """`nan_steps`: loss and gradients NaN at these step indices; `nan_grad_steps`: the gradients only (the
        loss stays finite)."""
        super().__init__(config)
        self.nan_steps = jnp.asarray(sorted(nan_steps) or [-1], jnp.int32)
        self.nan_grad_steps = jnp.asarray(sorted(nan_grad_steps) or [-1], jnp.int32)
        abstract = jax.eval_shape(self.init_params, jax.random.PRNGKey(0))
        self.tx = optim.make_optimizer(config.train, abstract, trainable)

    # State and its shardings: the Task defaults over these two.
    def init_params(self, rng):
        return toy_sharded.model.init(rng, jnp.zeros((1, LENGTH, toy_sharded.D)))

    def partition_rules(self):
        return toy_sharded.PARAM_RULES

    def train_step(self, state, batch, rng):
        loss, grads = jax.value_and_grad(toy_sharded.loss_fn)(state["params"], batch["x"], batch["y"])
        poison = jnp.any(self.nan_steps == state["step"])
        loss = jnp.where(poison, jnp.nan, loss)
        poison_grads = poison | jnp.any(self.nan_grad_steps == state["step"])
        grads = jax.tree_util.tree_map(lambda g: jnp.where(poison_grads, jnp.nan, g), grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, {"loss": loss}

    def eval_step(self, state, batch, rng):
        return {"loss": toy_sharded.loss_fn(state["params"], batch["x"], batch["y"])}

    def train_data(self, process_index, process_count):
        return ToyData(self.config.train.batch_size, process_index, process_count, self.config.seed)

    def eval_data(self, process_index, process_count):
        return ToyData(self.config.train.batch_size, process_index, process_count, seed=999)

    def batch_spec(self, batch_size):
        return {"x": jax.ShapeDtypeStruct((batch_size, LENGTH, toy_sharded.D), jnp.float32),
                "y": jax.ShapeDtypeStruct((batch_size, LENGTH), jnp.int32)}

    def flops_per_example(self):
        return 1e6

    def export_params(self, state):
        return state["params"], ConfigDict({"kind": "toy"})


def toy_config(**train_overrides) -> ConfigDict:
    c = config_lib.load_config("configs/example_mesh.py")
    c.train.num_steps = 10
    c.train.log_every = 1
    c.train.checkpoint_every = 2
    c.train.eval_every = 5
    c.train.eval_batches = 2
    c.train.progress_bar = False
    c.train.schedule.warmup_steps = 2
    # SGD: Adam would turn float-rounding noise in ~zero gradients (e.g. attention key biases) into full-size
    # steps, and the mesh-equivalence tests compare params across device layouts.
    c.train.optimizer.name = "sgd"
    c.train.optimizer.lr = 0.3
    for k, v in train_overrides.items():
        node = c
        parts = k.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return config_lib.validate(c)
