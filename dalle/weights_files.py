"""Reading foreign weight files (`dalle convert ...`) as data only: a weights file must never run code.

Accepted: `.npz`, `.safetensors`, and PyTorch files that `torch.load(weights_only=True)` reads (plain state dicts of
tensors, also nested under "state_dict"). A pickle that needs the full unpickler (a PyTorch Lightning checkpoint
with callbacks, say) is refused with the one-line command that re-saves only its tensors, to be run by a user who
trusts the file; the converters never fall back to the full unpickler themselves, because a malicious file is
exactly what the safe load rejects. TorchScript archives (OpenAI's CLIP `.pt`) are programs: they load only with
an explicit `allow_torchscript=True` (the CLI's `--allow_torchscript`), with a warning that it executes code.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from typing import Any, Mapping

import numpy as np


FLAX_WEIGHTS = "flax_model.msgpack"  # the weights file of Hugging Face-style flax checkpoints (dalle-mini, vqgan-jax)


def flax_checkpoint_config(directory: str) -> dict | None:
    """The config.json of a flax checkpoint folder (config.json + flax_model.msgpack), or None when `directory`
    is not one or its config is unreadable. Never raises: callers use it to recognise layouts."""
    cfg_path = os.path.join(directory, "config.json")
    if not (os.path.isfile(cfg_path) and os.path.isfile(os.path.join(directory, FLAX_WEIGHTS))):
        return None
    try:
        with open(cfg_path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class ConversionError(ValueError):
    """A source file or state dict the converters refuse; the message names the file, key or shape."""


def is_torchscript_archive(path: str) -> bool:
    """TorchScript archives are zip files with a `code/` folder (and `constants.pkl`) next to the data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in z.namelist())


def resave_command(path: str) -> str:
    return ("python -c \"import torch; ckpt = torch.load('" + path + "', weights_only=False); "
            "torch.save(ckpt.get('state_dict', ckpt), 'weights.pt')\"")


def tensor_to_numpy(value: Any) -> np.ndarray:
    """torch tensors (any float dtype, bf16 included) -> float32 numpy; integer tensors keep their dtype."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def load_state_dict(path: str, *, flag: str = "--from", allow_torchscript: bool = False) -> dict[str, np.ndarray]:
    """`{name: array}` from an .npz, .safetensors or PyTorch file, never executing code from it. `flag` names the
    command-line option the path came from, for the messages."""
    if not os.path.isfile(path):
        raise ConversionError(f"{flag} {path!r} does not exist")
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            if any(k.startswith("sd/") for k in keys):  # a state dict stored next to other arrays (test fixtures)
                return {k[3:]: z[k] for k in keys if k.startswith("sd/")}
            return {k: z[k] for k in keys}
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ConversionError(f"{flag} {path!r}: reading .safetensors needs `pip install safetensors`") from None
        return dict(load_file(path))
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{flag} {path!r}: reading PyTorch files needs torch (pip install -r "
                              "requirements-ref.txt), or pass the state dict as an .npz or .safetensors file") from None
    if is_torchscript_archive(path):
        if not allow_torchscript:
            raise ConversionError(
                f"{flag} {path!r} is a TorchScript archive: loading it runs code stored in the file. Pass "
                f"--allow_torchscript if you trust it (OpenAI's released CLIP .pt files are TorchScript), or save "
                f"its weights first: python -c \"import torch; torch.save(torch.jit.load('{path}').state_dict(), "
                f"'weights.pt')\"")
        warnings.warn(f"{path}: loading a TorchScript archive executes code from the file (--allow_torchscript)",
                      stacklevel=2)
        obj: Any = torch.jit.load(path, map_location="cpu").state_dict()
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - every reason the safe unpickler refuses is reported the same way
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConversionError(
                f"{flag} {path!r} is not a plain state dict of tensors (the safe loader says: {first[:200]}). If "
                f"you trust the file, re-save only its weights and convert that: {resave_command(path)}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{flag} {path!r}: expected a state dict (or a checkpoint with 'state_dict'), got "
                              f"{type(obj).__name__}")
    return {str(k): tensor_to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}
