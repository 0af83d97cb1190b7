"""Model checkpoints as directories: `config.json` (the ConfigDict that builds the model) + orbax `params/`.

This is the format converters write (`dalle convert ...`) and that `dalle generate`, `dalle encode` and
`finetune_from`/`encoder_init` read. Training checkpoints (params + optimizer + data position) live in a trainer
workdir (dalle/train/checkpointing.py); `load_model` accepts either kind of directory, and one step of a workdir's
checkpoints (`WORKDIR/checkpoints/STEP`, as orbax names them) to evaluate or sample a model part way through training.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import ConfigDict

from dalle import paths

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
PARTIAL_SUFFIX = ".partial"  # params being written by save_model
OLD_SUFFIX = ".old"  # the previous params while save_model swaps the new ones in


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used; the message names the path and what is wrong."""


def save_model(directory: str, params: Any, config: ConfigDict, extra: dict | None = None) -> str:
    """Writes params (any pytree of arrays) and the config that builds them. Returns the directory.

    Re-exporting over an existing model never loses it: the new params are written next to the old ones
    (`params.partial`) and swapped in only once complete, so a crash leaves the old model, or the new one with its
    old weights in `params.old` (put back by `recover_interrupted_export`). Other files in the directory (a CLIP's
    tokenizer, say) are kept."""
    directory = paths.absolute(directory)
    main = jax.process_index() == 0
    final, partial, old = (paths.join(directory, PARAMS_DIR + s) for s in ("", PARTIAL_SUFFIX, OLD_SUFFIX))
    if main:
        paths.makedirs(directory)
        recover_interrupted_export(directory)
        _remove_quietly(partial)  # left by a save that died before it finished
    _sync_processes("dalle.model_dir.save_model:start")
    # Sharded jax arrays are written by every process (orbax coordinates); numpy arrays as they are.
    params = jax.tree_util.tree_map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(partial, params)
    if main:
        meta = {"config": json.loads(config.to_json_best_effort()), **(extra or {})}
        # The new config is complete on disk before any params move, so nothing that can fail (serialising it, a
        # full disk) runs between the params swap and the config's rename.
        tmp = paths.write_temp(paths.join(directory, CONFIG_FILE), json.dumps(meta, indent=2, sort_keys=True))
        if paths.exists(final):
            paths.replace(final, old)
        paths.replace(partial, final)
        paths.replace(tmp, paths.join(directory, CONFIG_FILE))
        _remove_quietly(old)
    _sync_processes("dalle.model_dir.save_model:end")
    return directory


def recover_interrupted_export(directory: str) -> bool:
    """Puts `params.old` back when an export died between moving the old params aside and moving the new ones in.
    Returns whether it did."""
    final, old = paths.join(directory, PARAMS_DIR), paths.join(directory, PARAMS_DIR + OLD_SUFFIX)
    if paths.isdir(old) and not paths.exists(final):
        paths.replace(old, final)
        return True
    if paths.isdir(old):  # the swap finished but its cleanup did not: the next save needs the name
        _remove_quietly(old)
    return False


def _remove_quietly(directory: str) -> None:
    """Deletes a leftover params folder; a failure is logged, not raised, because it must not stop process 0 before
    the barrier the other processes wait at (the save itself already succeeded or has not started)."""
    try:
        paths.rmtree(directory)
    except OSError as e:
        logging.getLogger(__name__).warning("could not remove %s: %s", directory, e)


def _sync_processes(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _read_meta(directory: str) -> tuple[str, dict]:
    """(path, contents) of a model directory's config.json, which must hold a `config` entry."""
    path = paths.join(directory, CONFIG_FILE)
    if not paths.isfile(path):
        raise CheckpointError(f"{directory!r} is not a dalle checkpoint: {CONFIG_FILE} is missing")
    meta = json.loads(paths.read_text(path))
    if "config" not in meta:
        raise CheckpointError(f"{path}: no 'config' entry")
    return path, meta


def read_config(directory: str) -> ConfigDict:
    return ConfigDict(_tuplify(_read_meta(directory)[1]["config"]))


def read_extra(directory: str) -> dict:
    meta = json.loads(paths.read_text(paths.join(directory, CONFIG_FILE)))
    meta.pop("config", None)
    return meta


def exported_model_dir(directory: str) -> str | None:
    """The model directory holding `directory`'s exported model: itself, or a trainer workdir's `model/`
    (None when training has not exported one yet)."""
    if _params_dir(directory) is not None and paths.isfile(paths.join(directory, CONFIG_FILE)):
        return directory
    exported = paths.join(directory, "model")
    return exported if paths.isfile(paths.join(exported, CONFIG_FILE)) else None


def set_config_section(directory: str, section: str, values: dict, extra: dict | None = None) -> str:
    """Replaces one top-level section of a model directory's config (and sets `extra` entries next to it), e.g.
    the `sampling` section after an eval sweep. Atomic: readers see the old file or the new one, never a partial
    write. Returns the path written."""
    path, meta = _read_meta(directory)
    meta["config"][section] = json.loads(json.dumps(values))
    meta.update(extra or {})
    paths.write_text_atomic(path, json.dumps(meta, indent=2, sort_keys=True))
    return path


def resolve_path(directory: str, path: str) -> str:
    """A path stored in the config of the model in `directory` (a tokenizer, a VQGAN, a CLIP): training writes
    them relative to where it ran (e.g. `outputs/demo/tokenizer/spm.model`), so a relative path is looked up
    under the model directory and each folder above it (nearest first; then the same from the directory's real
    location, when it is reached through a link), then under the current directory; the
    first that exists wins. Absolute or unfound paths come back unchanged, for the caller's error message."""
    if not path or os.path.isabs(path) or paths.is_remote(path):
        return path
    if paths.is_remote(directory):  # the model directory and each folder above it, up to the bucket
        here = paths.path(directory)
        while paths.is_remote(here) and str(here).rstrip("/").count("/") >= 2:
            candidate = here / path
            if candidate.exists():
                return str(candidate)
            here = here.parent
        return path
    # The directory as named and as it really is: a model reached through a link was written where it lives.
    for start in dict.fromkeys((os.path.abspath(directory), os.path.realpath(directory))):
        here = start
        while True:
            candidate = os.path.join(here, path)
            if os.path.exists(candidate):
                return candidate
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    return os.path.abspath(path) if os.path.exists(path) else path


def _tuplify(x: Any) -> Any:
    """JSON turns tuples into lists; configs use tuples."""
    if isinstance(x, dict):
        return {k: _tuplify(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(_tuplify(v) for v in x)
    return x


def _params_dir(directory: str) -> str | None:
    """`params/`, or `params.old` when an export died after moving it aside (config.json is still the old one)."""
    for name in (PARAMS_DIR, PARAMS_DIR + OLD_SUFFIX):
        path = paths.join(paths.absolute(directory), name)
        if paths.isdir(path):
            return path
    return None


def load_params(directory: str, target: Any | None = None, shardings: Any | None = None) -> Any:
    """Restores params; with `target` (arrays or ShapeDtypeStructs) the structure and shapes are checked, and with
    `shardings` each array is restored straight onto its devices (no full host copy)."""
    params_dir = _params_dir(directory)
    if params_dir is None:
        raise CheckpointError(f"{directory!r} has no {PARAMS_DIR}/ directory")
    with ocp.StandardCheckpointer() as ckptr:
        if target is None:
            # Onto this process's first device, whatever topology wrote it (e.g. a multi-host run).
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            meta = ckptr.metadata(params_dir)
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            target = jax.tree_util.tree_map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree,
                is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
            )
            return ckptr.restore(params_dir, target)
        if shardings is not None:
            target = jax.tree_util.tree_map(
                lambda t, s: jax.ShapeDtypeStruct(np.shape(t), t.dtype, sharding=s), target, shardings
            )
        else:
            target = jax.tree_util.tree_map(lambda t: jax.ShapeDtypeStruct(np.shape(t), t.dtype), target)
        return ckptr.restore(params_dir, target)


def load_model(directory: str) -> tuple[ConfigDict, Any]:
    """(config, params) from an exported model directory, a trainer workdir (its latest checkpoint) or one
    checkpoint step of a workdir (WORKDIR/checkpoints/STEP)."""
    if _params_dir(directory) is not None:
        return read_config(directory), load_params(directory)
    step_of = checkpoint_step(directory)
    if step_of is not None:
        return load_latest_model(*step_of)
    return load_latest_model(directory)


def checkpoint_step(directory: str) -> tuple[str, int] | None:
    """(workdir, step) when `directory` is one step of a trainer workdir's checkpoints, WORKDIR/checkpoints/STEP."""
    name, parent = paths.basename(directory), paths.dirname(directory)
    if not name.isdigit() or paths.basename(parent) != "checkpoints":
        return None
    workdir = paths.dirname(parent)
    return (workdir, int(name)) if paths.isfile(paths.join(workdir, "config.json")) else None


def trained_step(directory: str) -> int | None:
    """The training step of the weights `directory` loads as a model (what metrics.json records): a checkpoint
    step's own; an export's, as the trainer saved it with the export (a run stopped by its time limit exports at the
    step it reached); for a workdir still training, its latest checkpoint step. None when nothing records one (a
    converted model, an export written before steps were saved)."""
    step_of = checkpoint_step(directory)
    if step_of is not None:
        return step_of[1]
    exported = exported_model_dir(directory)
    if exported is not None:
        step = read_extra(exported).get("step")
        return int(step) if step is not None else None
    steps = [int(paths.basename(d)) for d in paths.glob(paths.join(directory, "checkpoints"), "*")
             if paths.basename(d).isdigit() and paths.isdir(d)]
    return max(steps) if steps else None


def load_latest_model(workdir: str, step: int | None = None) -> tuple[ConfigDict, Any]:
    """(config, params) of a trainer workdir (dalle/train/checkpointing.py's layout): the exported model if
    training finished, else the params of the latest checkpoint step; with `step`, that checkpoint's params."""
    exported = paths.join(workdir, "model")
    if step is None and paths.isfile(paths.join(exported, CONFIG_FILE)):
        return read_config(exported), load_params(exported)
    config = _run_config(workdir)
    steps_dir = paths.join(paths.absolute(workdir), "checkpoints")
    with ocp.CheckpointManager(steps_dir, options=ocp.CheckpointManagerOptions(read_only=True)) as manager:
        steps = manager.all_steps()
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise CheckpointError(f"{workdir!r} has no checkpoint yet")
        elif step not in steps:
            raise CheckpointError(f"{workdir!r} has no checkpoint of step {step} (it has {sorted(steps)})")
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    state = restored["state"]
    params = state["params"] if isinstance(state, dict) and "params" in state else state
    return config, params


def config_of(directory: str) -> ConfigDict:
    """The config of an exported model directory, a trainer workdir or one of its checkpoint steps, without
    loading any parameter."""
    exported = exported_model_dir(directory)
    if exported is not None:
        return read_config(exported)
    step_of = checkpoint_step(directory)
    if step_of is not None:
        return _run_config(step_of[0])
    return _run_config(directory)


def _run_config(workdir: str) -> ConfigDict:
    run_config = paths.join(workdir, "config.json")
    if not paths.exists(run_config):
        raise CheckpointError(f"{workdir!r} is neither a model checkpoint (no {PARAMS_DIR}/) nor a training workdir")
    return ConfigDict(_tuplify(json.loads(paths.read_text(run_config))))
