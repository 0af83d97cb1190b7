"""Training checkpoints in a workdir: orbax, async, keep-N, with the data position and the config.

Layout of a workdir:
    config.json             the full validated config of the run (resume refuses an incompatible one)
    checkpoints/<step>/     orbax: `state` (sharded pytree: params, optimizer, step, ...) + `meta` (JSON: step,
                            data iterator position, counters)
    model/                  exported params + config at the end (dalle.model_dir format)
    tensorboard/            summaries

Orbax writes each step to a temporary directory and renames it when complete, so `kill -9` at any moment leaves
the previous checkpoint intact and resume never sees a half-written one.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import orbax.checkpoint as ocp
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import paths

# Keys that may change between a run and its resumption (how long / how chatty), everything else must match.
RESUMABLE_CHANGES = (
    "train.num_steps",
    "train.max_minutes",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress_bar",
    "name",
    "sampling",  # how the exported model is sampled: no effect on training
    "data.image_tokenizer",  # only checks the kind of data.vqgan_checkpoint
)


class ResumeError(ValueError):
    """Resuming a workdir with a config that would not continue the same run."""


def config_path(workdir: str) -> str:
    return paths.join(workdir, "config.json")


def _with_defaults(saved: ConfigDict) -> ConfigDict:
    """A saved run config completed with today's schema defaults, so that keys added to the schemas since it was
    written (left at their defaults) do not block resuming it; as saved when it no longer validates."""
    try:
        return ConfigDict(json.loads(config_lib.validate(saved).to_json_best_effort()))
    except Exception:  # noqa: BLE001 - a config today's checks cannot read is compared as saved (and then differs)
        return saved


def check_or_write_config(workdir: str, config: ConfigDict) -> None:
    """Writes the run's config on first start; on resume, stops with the differences if they matter."""
    path = config_path(workdir)
    if jax.process_index() == 0:
        paths.makedirs(workdir)
    if paths.exists(path):
        old = _with_defaults(ConfigDict(json.loads(paths.read_text(path))))
        new = ConfigDict(json.loads(config.to_json_best_effort()))
        diffs = [d for d in config_lib.diff(old, new) if not d.split(":")[0].startswith(RESUMABLE_CHANGES)]
        if diffs:
            raise ResumeError(
                f"{workdir} holds a run with a different config; these keys differ (saved != given):\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --workdir, or the saved values."
            )
    if jax.process_index() == 0:
        paths.write_text_atomic(path, config.to_json_best_effort(indent=2, sort_keys=True))


class Checkpointer:
    """Thin wrapper over orbax's CheckpointManager for (state pytree, JSON meta)."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = paths.join(paths.absolute(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # a save cut off by a crash leaves a `<step>.orbax-checkpoint-tmp-*`
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """`abstract_state`: ShapeDtypeStructs carrying the target shardings (restored straight onto devices)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], dict(out["meta"])

    def restore_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
