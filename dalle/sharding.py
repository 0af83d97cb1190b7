"""The one place where dalle decides how arrays are laid out over devices.

Three layers, as in MaxText / t5x:
  1. a `jax.sharding.Mesh` built from config (axes like `data`, `fsdp`, `model`; `-1` fills the rest),
  2. *logical* axis names (`batch`, `embed`, `heads`, ...) mapped to mesh axes by `logical_rules`,
  3. regex rules over Haiku parameter paths (`module/submodule/param`) that name each param's logical axes
     (grok-1 style). Params stacked by `hk.layer_stack` carry one extra leading axis, named `layers`.

Models only ever speak in logical names (`constrain(x, ("batch", "length", "embed"))`), so the same code runs on
one CPU (everything replicated, constraints are no-ops) and on a pod.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

LogicalAxes = tuple  # tuple[str | None, ...]
LogicalRules = Sequence[tuple[str, Any]]  # (logical name, mesh axis | tuple of mesh axes | None)
ParamRules = Sequence[tuple[str, LogicalAxes]]  # (regex over "module/param", logical axes)

LAYERS = "layers"

# Sensible defaults: data parallel over `data`+`fsdp`, weights sharded ZeRO-3 style on `fsdp`, tensor parallel
# over `model` (heads, mlp and vocab), like dalle-mini's (dp, mp) rules and MaxText's defaults.
DEFAULT_LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "model"),
    ("kv", None),
    ("mlp", "model"),
    ("vocab", "model"),
    ("layers", None),
    ("norm", None),
    ("conv_in", None),
    ("conv_out", "model"),
    ("spatial", None),
    ("codebook", None),
)


class ShardingError(ValueError):
    """A mesh, rule or parameter that cannot be laid out; the message names it."""


# --------------------------------------------------------------------------------------------------------------
# Mesh
# --------------------------------------------------------------------------------------------------------------
def resolve_mesh_shape(axes: Sequence[str], shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces a single `-1` by what is left of `num_devices`; checks the product matches exactly."""
    if len(axes) != len(shape):
        raise ShardingError(f"mesh.axes {tuple(axes)} and mesh.shape {tuple(shape)} have different lengths")
    if len(set(axes)) != len(axes):
        raise ShardingError(f"mesh.axes has a repeated name: {tuple(axes)}")
    shape = [int(s) for s in shape]
    fills = [i for i, s in enumerate(shape) if s == -1]
    if len(fills) > 1:
        raise ShardingError(f"mesh.shape {tuple(shape)} has more than one -1")
    for a, s in zip(axes, shape):
        if s == 0 or s < -1:
            raise ShardingError(f"mesh.shape[{a!r}] = {s} is not a positive size or -1")
    fixed = math.prod(s for s in shape if s != -1)
    if fills:
        if num_devices % fixed:
            raise ShardingError(
                f"mesh.shape {tuple(shape)}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices"
            )
        shape[fills[0]] = num_devices // fixed
    if math.prod(shape) > num_devices:
        raise ShardingError(
            f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices but {num_devices} are available"
        )
    return tuple(shape)


def make_mesh(axes: Sequence[str], shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with Auto axis types (Haiku layers need them) over all devices of all processes by default.

    A shape without -1 may use fewer devices than there are (the first ones); with -1 it uses all of them."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(axes, shape, len(devices))
    # A mesh without -1 may use fewer devices than there are (e.g. a 1-device reference run): the first ones.
    devices = _process_major(devices)[: math.prod(shape)]
    if jax.process_count() > 1 or devices[0].platform == "cpu":
        # Process-major order: each process owns a contiguous block of the leading (data) axis.
        device_array = np.asarray(_process_major(devices)).reshape(shape)
    else:  # topology-aware placement (TPU/GPU)
        from jax.experimental import mesh_utils

        device_array = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
    return Mesh(device_array, tuple(axes), axis_types=(AxisType.Auto,) * len(axes))


def _process_major(devices: Sequence[jax.Device]) -> list[jax.Device]:
    """Orders devices by (process, id) so each process owns a contiguous block of the leading (data) axis."""
    return sorted(devices, key=lambda d: (d.process_index, d.id))


def mesh_from_config(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    return make_mesh(tuple(mesh_config.axes), tuple(mesh_config.shape), devices)


# --------------------------------------------------------------------------------------------------------------
# Logical axes -> PartitionSpec
# --------------------------------------------------------------------------------------------------------------
def _as_tuple(mesh_axes: Any) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    if isinstance(mesh_axes, str):
        return (mesh_axes,)
    return tuple(mesh_axes)


def logical_to_spec(
    logical_axes: Sequence[str | None],
    rules: LogicalRules,
    mesh: Mesh,
    shape: Sequence[int] | None = None,
) -> P:
    """Maps logical names to a PartitionSpec on `mesh`.

    Mesh axes of size 1 are dropped (they shard nothing), a mesh axis is used at most once per array, and when
    `shape` is given a dimension that the mesh axes do not divide stays replicated rather than failing.
    """
    table = {}
    for name, target in rules:
        table.setdefault(name, target)  # first rule wins, like MaxText
    used: set[str] = set()
    spec = []
    for i, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ShardingError(f"logical axis {name!r} has no rule in mesh.logical_rules (known: {sorted(table)})")
        axes = []
        for ax in _as_tuple(table[name]):
            # Rules may name axes this mesh lacks (a 1-D data mesh); config validation catches typos.
            if ax not in mesh.shape or mesh.shape[ax] == 1 or ax in used:
                continue
            axes.append(ax)
        if shape is not None and axes:
            # Keep the longest prefix of mesh axes that divides the dimension.
            while axes and shape[i] % math.prod(mesh.shape[a] for a in axes):
                axes.pop()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def logical_sharding(
    logical_axes: Sequence[str | None], rules: LogicalRules, mesh: Mesh, shape: Sequence[int] | None = None
) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, rules, mesh, shape))


def config_logical_rules(config: Any) -> tuple[tuple[str, Any], ...]:
    """A config's own `mesh.logical_rules` as tuples (JSON-loaded lists included); () without a mesh section."""
    mesh = config.get("mesh") if config is not None and "mesh" in config else None
    rules = mesh.get("logical_rules", ()) if mesh is not None else ()
    return tuple((str(name), tuple(target) if isinstance(target, (list, tuple)) else target)
                 for name, target in (rules or ()))


def rules_from_config(*configs: Any) -> tuple[tuple[str, Any], ...]:
    """The logical rules everything that lays out a model's arrays must use: each config's `mesh.logical_rules`
    in the order given (the first rule for a name wins), then DEFAULT_LOGICAL_RULES.

    Training, generation and encoding all call this on the config that built the params (exported model
    configs carry `mesh.logical_rules`), so a model is laid out the same way wherever it runs."""
    return sum((config_logical_rules(c) for c in configs), ()) + DEFAULT_LOGICAL_RULES


def batch_shards(mesh: Mesh, rules: LogicalRules) -> int:
    """How many ways the `batch` logical axis is split on `mesh` under `rules` (the product of the sizes of the
    mesh axes it maps to): global batches must have a multiple of this many rows."""
    return logical_axis_shards("batch", rules, dict(mesh.shape))


def logical_axis_shards(name: str, rules: LogicalRules, axis_sizes: Mapping[str, int]) -> int:
    """How many ways logical axis `name` is split over mesh axes of these sizes (no devices needed: config
    validation uses it for meshes it has not built)."""
    table: dict[str, Any] = {}
    for rule_name, target in rules:
        table.setdefault(rule_name, target)
    return math.prod(axis_sizes[a] for a in dict.fromkeys(_as_tuple(table.get(name))) if a in axis_sizes)


# --------------------------------------------------------------------------------------------------------------
# Parameter rules (regex over Haiku paths)
# --------------------------------------------------------------------------------------------------------------
_PARAM_RULES: dict[str, tuple[tuple[str, LogicalAxes], ...]] = {}


def register_partition_rules(name: str, rules: ParamRules) -> None:
    """Models register their rules under their config `kind`, so the trainer finds them by name."""
    _PARAM_RULES[name] = tuple((pattern, tuple(axes)) for pattern, axes in rules)


def get_partition_rules(name: str) -> tuple[tuple[str, LogicalAxes], ...]:
    if name not in _PARAM_RULES:
        raise ShardingError(f"no partition rules registered for {name!r} (registered: {sorted(_PARAM_RULES)})")
    return _PARAM_RULES[name]


def path_str(path: Sequence[Any]) -> str:
    """"module/submodule/param" for a jax tree path (the form partition rules and filters match against)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def param_logical_axes(params: Any, rules: ParamRules) -> Any:
    """Tree of logical-axes tuples, one per param; the first matching rule wins.

    A param with one more dimension than its rule names is taken to be `hk.layer_stack`-ed and gets a leading
    `layers` axis. Unmatched params are collected and reported together.
    """
    compiled = [(re.compile(p), axes) for p, axes in rules]
    missing: list[str] = []

    def one(path, leaf):
        name = path_str(path)
        ndim = len(np.shape(leaf))
        for regex, axes in compiled:
            if regex.search(name):
                if ndim == len(axes):
                    return tuple(axes)
                if ndim == len(axes) + 1:
                    return (LAYERS,) + tuple(axes)
                if ndim == len(axes) + 2:  # nested layer stacks (e.g. groups of layers)
                    return (LAYERS, None) + tuple(axes)
                raise ShardingError(
                    f"param {name!r} has shape {np.shape(leaf)} but rule {regex.pattern!r} names {len(axes)} axes {axes}"
                )
        missing.append(f"{name} {tuple(np.shape(leaf))}")
        return None

    out = jax.tree_util.tree_map_with_path(one, params)
    if missing:
        raise ShardingError("no partition rule matches these params:\n  " + "\n  ".join(missing))
    return out


def param_specs(params: Any, param_rules: ParamRules, logical_rules: LogicalRules, mesh: Mesh) -> Any:
    axes = param_logical_axes(params, param_rules)
    return jax.tree_util.tree_map(
        lambda leaf, ax: logical_to_spec(ax, logical_rules, mesh, np.shape(leaf)),
        params,
        axes,
        is_leaf=lambda x: x is None,
    )


def param_shardings(params: Any, param_rules: ParamRules, logical_rules: LogicalRules, mesh: Mesh) -> Any:
    """NamedSharding per param. `params` may hold arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape`)."""
    specs = param_specs(params, param_rules, logical_rules, mesh)
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def derived_state_shardings(state: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings for optimizer (or any) state built from params: a leaf whose path ends with a param's path and
    has that param's shape takes the param's sharding (Adam's mu/nu, EMA copies); everything else (step counts,
    factored Adafactor statistics, scalars) is replicated."""
    by_path: dict[tuple[str, ...], tuple[tuple[int, ...], Any]] = {}
    for (path, leaf), sh in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(shardings)
    ):
        by_path[tuple(path_str([k]) for k in path)] = (tuple(np.shape(leaf)), sh)
    depth = max((len(k) for k in by_path), default=0)

    def one(path, leaf):
        keys = tuple(path_str([k]) for k in path)
        for n in range(min(depth, len(keys)), 0, -1):
            hit = by_path.get(keys[-n:])
            if hit is not None and hit[0] == tuple(np.shape(leaf)):
                return hit[1]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, state)


# --------------------------------------------------------------------------------------------------------------
# Activation constraints
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Context:
    mesh: Mesh
    rules: tuple


_CURRENT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar("dalle_sharding", default=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: LogicalRules = DEFAULT_LOGICAL_RULES) -> Iterator[Mesh]:
    """Activates `mesh` + `rules` for `constrain` while functions are traced (and as jax's ambient mesh)."""
    token = _CURRENT.set(_Context(mesh, tuple((n, t) for n, t in rules)))
    try:
        with jax.set_mesh(mesh):
            yield mesh
    finally:
        _CURRENT.reset(token)


def current_mesh() -> Mesh | None:
    ctx = _CURRENT.get()
    return None if ctx is None else ctx.mesh


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op without an active mesh or on a 1-device mesh."""
    ctx = _CURRENT.get()
    if ctx is None or ctx.mesh.size == 1:
        return x
    if len(logical_axes) != x.ndim:
        raise ShardingError(f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for shape {x.shape}")
    spec = logical_to_spec(logical_axes, ctx.rules, ctx.mesh, x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(ctx.mesh, spec))


# --------------------------------------------------------------------------------------------------------------
# Host data -> global arrays
# --------------------------------------------------------------------------------------------------------------
def batch_sharding(mesh: Mesh, ndim: int, rules: LogicalRules = DEFAULT_LOGICAL_RULES) -> NamedSharding:
    """Leading axis over the batch mesh axes, the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules, mesh))


def host_to_global(batch: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_LOGICAL_RULES) -> Any:
    """Puts each process's slice of the batch onto the global mesh (batch-sharded on the leading axis).

    Each process passes its own rows; the global batch is their concatenation in process order.
    """

    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, rules), x)

    return jax.tree_util.tree_map(one, batch)


def row_multiple(mesh: Mesh, rules: LogicalRules = DEFAULT_LOGICAL_RULES) -> int:
    """How many rows each process must feed so that its rows split evenly over the batch shards it holds."""
    return max(1, batch_shards(mesh, rules) // jax.process_count())


def run_on_rows(fn: Any, params: Any, rows: np.ndarray, mesh: Mesh,
                rules: LogicalRules = DEFAULT_LOGICAL_RULES) -> np.ndarray:
    """`fn(params, batch)` (jitted, batch-sharded in and out) over this process's `rows`: padded with copies of the
    last row to a multiple of the batch shards it feeds, assembled across processes, and this process's rows of
    the answer returned. How the image tokenizers run their encoders and decoders on any mesh."""
    n = rows.shape[0]
    pad = (-n) % row_multiple(mesh, rules)
    if pad:
        rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)], axis=0)
    with use_mesh(mesh, rules):
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            out = fn(params, host_to_global(rows, mesh, rules))
            out = multihost_utils.global_array_to_host_local_array(out, mesh, batch_sharding(mesh, out.ndim,
                                                                                            rules).spec)
        else:
            out = fn(params, jax.device_put(rows, batch_sharding(mesh, rows.ndim, rules)))
    return np.asarray(jax.device_get(out))[:n]


def local_batch_size(global_batch_size: int) -> int:
    """Rows each process feeds; the global batch must split evenly over processes."""
    n = jax.process_count()
    if global_batch_size % n:
        raise ShardingError(f"batch size {global_batch_size} does not split over {n} processes")
    return global_batch_size // n


def shard_put(tree: Any, shardings: Any) -> Any:
    """Places a host tree (same on every process) according to `shardings`."""
    return jax.tree_util.tree_map(lambda x, s: jax.device_put(jnp.asarray(x), s), tree, shardings)


def gather_to_host(tree: Any) -> Any:
    """Full numpy copies of (possibly multi-host sharded) arrays on every process; for small trees and tests."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda a: np.asarray(jax.device_get(a)), tree)
    return jax.tree_util.tree_map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree)


def describe(params: Any, shardings: Any) -> str:
    """One line per param: path, shape, spec; for logs and `--dry_run`."""
    lines = []
    for (path, leaf), sh in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(shardings)):
        spec = sh.spec if isinstance(sh, NamedSharding) else sh
        lines.append(f"{path_str(path):70s} {str(tuple(np.shape(leaf))):22s} {spec}")
    return "\n".join(lines)


def to_mapping(tree: Any) -> Mapping[str, Any]:
    """Flat {path: leaf} view of a tree, convenient in tests and converters."""
    return {path_str(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
