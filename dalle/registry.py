"""Registries by name: model kinds, training tasks, data sources, image tokenizers and eval metrics.

Each extension point is a `Registry`. An entry is registered by the module that implements it
(`@TASKS.register("dalle")`, `MODEL_KINDS.register("toy", ModelKind(...))`), so adding a kind, a source or a metric
is one module plus its config, never a list in another file. Built-in entries are found the way big_vision finds
models, by import: a registry names the packages whose modules register built-ins, and imports every public module
of them the first time a name is missing. User code (and tests) register from anywhere before use.

Entries that point at heavy code (jax, tensorflow) may name it as a `"module:attribute"` string, resolved with
`resolve` only when used, so that validating a config or printing `--help` stays light.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Any, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no module registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError quotes its message; show it as written
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> entry, with built-ins discovered by importing the modules of `packages`."""

    def __init__(self, what: str, packages: Sequence[str] = ()):
        self.what = what
        self.packages = tuple(packages)
        self._entries: dict[str, T] = {}
        self._discovered = not self.packages
        self._lock = threading.RLock()

    def register(self, name: str, entry: T | None = None, *, replace: bool = False) -> Any:
        """`register(name, entry)`, or `@register(name)` as a decorator. A second entry under one name is an error
        unless `replace=True` (tests that re-register a toy)."""

        def add(obj: T) -> T:
            with self._lock:
                if name in self._entries and self._entries[name] is not obj and not replace:
                    raise ValueError(f"{self.what} {name!r} is already registered ({self._entries[name]!r})")
                self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def _discover(self) -> None:
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            for package in self.packages:
                pkg = importlib.import_module(package)
                for info in pkgutil.iter_modules(pkg.__path__):
                    if not info.name.startswith("_"):
                        importlib.import_module(f"{package}.{info.name}")

    def get(self, name: str) -> T:
        if name not in self._entries:
            self._discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"{self.what} {name!r} is not registered (known: {', '.join(self.names())})") \
                from None

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def resolve(target: Any) -> Any:
    """A `"package.module:attribute"` string -> the attribute (imported now); anything else is returned as is."""
    if not isinstance(target, str):
        return target
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"{target!r} is not of the form 'package.module:attribute'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj



# The extension points. Entry types: dalle.kinds.ModelKind, a dalle.train.task.Task subclass, dalle.data.sources.DataSource,
# dalle.kinds.ImageTokenizer, dalle.eval.metrics.Metric.
MODEL_KINDS: Registry = Registry("model kind (model.kind)", ("dalle.kinds",))
TASKS: Registry = Registry("training task", ("dalle.train.tasks",))
DATA_SOURCES: Registry = Registry("data source (data.source)", ("dalle.data.sources",))
IMAGE_TOKENIZERS: Registry = Registry("image tokenizer", ("dalle.kinds",))
METRICS: Registry = Registry("eval metric (eval.metrics)", ("dalle.eval.metrics",))
