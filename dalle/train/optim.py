"""Optimizers, learning-rate schedules, clipping, weight-decay masks and frozen parameter groups from config.

Distributed Shampoo (dalle-mini's default) has no maintained package for this jax version, so it is not offered;
adafactor is the memory-lean choice for the pod configs, adamw the default.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from dalle import sharding

PathFilter = Callable[[str], bool]


def make_schedule(train: ConfigDict) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine / linear decay to `end_fraction * lr`, constant, or inverse sqrt."""
    lr, warmup, total = train.optimizer.lr, int(train.schedule.warmup_steps), int(train.num_steps)
    name, end = train.schedule.name, train.schedule.end_fraction
    decay_steps = max(total - warmup, 1)
    if name == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=end)
    elif name == "linear":
        after = optax.linear_schedule(lr, lr * end, decay_steps)
    elif name == "constant":
        after = optax.constant_schedule(lr)
    elif name == "rsqrt":
        w = max(warmup, 1)
        after = lambda step: lr * jnp.sqrt(w / (step + w))  # noqa: E731 - continuous at the end of warmup
    else:
        raise ValueError(f"train.schedule.name = {name!r} is not cosine, linear, constant or rsqrt")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _decay_mask(decay_norms_and_biases: bool) -> Callable[[Any], Any]:
    """Weight decay on matrices (kernels, embeddings) only, as is usual, unless asked otherwise. A callable, so
    it also fits the partial trees `multi_transform` hands to the trained group."""
    return lambda params: jax.tree_util.tree_map(lambda p: decay_norms_and_biases or jnp.ndim(p) >= 2, params)


def make_base_optimizer(train: ConfigDict) -> optax.GradientTransformation:
    opt = train.optimizer
    schedule = make_schedule(train)
    wd = opt.weight_decay
    mask = _decay_mask(opt.decay_norms_and_biases)
    if opt.name == "adamw":
        tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=wd, mask=mask)
    elif opt.name == "adam":
        tx = optax.adam(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "adafactor":
        tx = optax.adafactor(schedule, weight_decay_rate=wd or None, weight_decay_mask=mask if wd else None)
    elif opt.name == "lion":
        tx = optax.lion(schedule, b1=opt.b1, b2=opt.b2, weight_decay=wd, mask=mask)
    elif opt.name == "sgd":
        tx = optax.sgd(schedule, momentum=opt.b1 or None)
    else:
        raise ValueError(f"train.optimizer.name = {opt.name!r} is not supported")
    if train.grad_clip_norm and train.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), tx)
    return tx


def trainable_labels(params: Any, trainable: PathFilter | None) -> Any:
    """'train' / 'freeze' per param from a predicate over its `module/param` path."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if trainable is None or trainable(sharding.path_str(path)) else "freeze", params
    )


def make_optimizer(train: ConfigDict, params: Any, trainable: PathFilter | None = None) -> optax.GradientTransformation:
    """The full optimizer. Frozen params (`trainable(path)` False) get zero updates and keep no optimizer state:
    `freeze_encoder` and `embeddings_only` are expressed this way by the tasks."""
    if trainable is None:
        return make_base_optimizer(train)
    labels = trainable_labels(params, trainable)
    return optax.multi_transform({"train": make_base_optimizer(train), "freeze": optax.set_to_zero()}, labels)
