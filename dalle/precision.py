"""Floating-point precisions by name: "float32" | "bfloat16" | "float16".

One place for the choice that `train.compute_dtype`, `dalle generate --dtype` (and `generation.Generator`'s
`dtype`), `eval.dtype` and `dalle convert dalle-mini --dtype` make, so every one of them accepts the same names
and refuses others with the same message.

Light on purpose: config schemas import it, so jax is imported only inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


class PrecisionError(ValueError):
    """A precision name that is not one of DTYPES; the message names where it came from."""


def problem(name: Any, label: str) -> str | None:
    """The error message for `name` given as `label` (a flag or config key), None when it is a known precision."""
    if isinstance(name, str) and name in DTYPES:
        return None
    return f"{label} = {name!r} must be float32, bfloat16 or float16"


def check(name: Any, label: str) -> str:
    """`name` when it is a known precision, else PrecisionError naming `label`."""
    message = problem(name, label)
    if message:
        raise PrecisionError(message)
    return name


def jnp_dtype(name: str) -> Any:
    """The jax/numpy dtype of a precision name (bfloat16 is ml_dtypes', which numpy arrays can hold too)."""
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[check(name, "dtype")]


def is_floating(x: Any) -> bool:
    """Whether an array holds floats (bfloat16 included, which numpy's own `issubdtype` does not count)."""
    import jax.numpy as jnp

    dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
    return bool(jnp.issubdtype(dtype, jnp.floating))


def cast(tree: Any, name: str) -> Any:
    """Every floating leaf of `tree` in precision `name`; integer leaves and leaves already there are untouched.
    numpy leaves stay numpy and jax arrays stay jax arrays (on their devices)."""
    dtype = jnp_dtype(name)

    def one(x: Any) -> Any:
        if not hasattr(x, "astype") or not is_floating(x) or x.dtype == dtype:
            return x
        return x.astype(dtype)

    import jax

    return jax.tree_util.tree_map(one, tree)


def name_of(tree: Any) -> str | None:
    """The precision name of the floating leaves of `tree` (the most common one when they differ; None when
    there are none or theirs has no name here, e.g. float64)."""
    import jax
    import numpy as np

    counts: dict[str, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "dtype") and is_floating(leaf):
            key = np.dtype(leaf.dtype).name
            counts[key] = counts.get(key, 0) + int(np.size(leaf))
    if not counts:
        return None
    best = max(counts, key=counts.get)
    return best if best in DTYPES else None
