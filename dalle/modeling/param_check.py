"""One report of how a set of named arrays differs from what an architecture expects: every missing, unexpected and
misshapen name at once, so that a user fixing a checkpoint or a converted state dict sees the whole problem in one
error instead of a shape failure deep inside jit. Used by the models' `check_params` and by the converters."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


class ParamMismatchError(ValueError):
    """Params that do not fit the architecture; the message lists every missing, unexpected or misshapen one."""


def mismatch_lines(want: Mapping[str, tuple[int, ...]], have: Mapping[str, tuple[int, ...]],
                   noun: str = "") -> list[str]:
    """Flat {name: shape} expected vs given -> 'missing', 'unexpected' and 'wrong shape' lines (none if they agree).
    `noun` ("keys") names what is missing or unexpected."""
    noun = f" {noun}" if noun else ""
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = sorted(f"{k}: {tuple(have[k])} != expected {tuple(want[k])}"
                    for k in set(want) & set(have) if tuple(want[k]) != tuple(have[k]))
    lines = []
    if missing:
        lines.append(f"missing{noun} ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"unexpected{noun} ({len(unexpected)}): " + ", ".join(unexpected))
    if shapes:
        lines.append(f"wrong shape ({len(shapes)}): " + "; ".join(shapes))
    return lines


def flat_shapes(params: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Haiku's {module: {name: array or shape}} -> {"module/name": shape}."""
    return {f"{m}/{n}": (tuple(v) if isinstance(v, tuple) else tuple(np.shape(v)))
            for m, ps in params.items() for n, v in ps.items()}


def check_param_shapes(params: Mapping[str, Mapping[str, Any]], expected: Mapping[str, Mapping[str, tuple]],
                       model: str, what: str = "params") -> None:
    """Raises ParamMismatchError naming `what` and `model` with every difference of Haiku `params` from
    `expected` ({module: {name: shape}})."""
    lines = mismatch_lines(flat_shapes(expected), flat_shapes(params))
    if lines:
        raise ParamMismatchError("\n  ".join([f"{what} do not match the {model} config:", *lines]))
