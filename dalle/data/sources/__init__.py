"""Data sources: what `data.source` names, each in one place.

A source is one `DataSource` registered in `dalle.registry.DATA_SOURCES` by a module of this package (or by user
code before the config is validated). It says how to check the `data` keys it reads, how to make the tfds builder
that `dalle data` builds and the raw seqio task reads, and what building needs. A source without a builder (such
as `encoded`) is read from `data.encoded_dir` only.

These modules stay light (no jax or tensorflow imports): config validation imports them. Builders are named as
`"module:attribute"` strings (or callables that import lazily) and resolved only when used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from ml_collections import ConfigDict

from dalle import registry

Check = Callable[[ConfigDict], Iterable[str]]  # data section -> error messages


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Everything the code asks of a `data.source`."""

    name: str
    description: str  # one line
    # (data section) -> an unprepared tfds builder, as a callable or "module:attr"; None: not a tfds dataset.
    builder: Any = None
    tfds_name: str = ""  # the builder's tfds name (error messages, seqio), known without importing tensorflow
    # (data section) -> build summary dict, replacing `dalle data`'s generic build (dalle.data.build.build_tfds).
    build: Any = None
    build_needs: tuple[str, ...] = ()  # data keys that building (not reading a built dataset) needs
    check: Check | str | None = None  # source-specific checks of the data section (callable or "module:attr")
    # () -> {key: default} of the `data` keys only this source reads; dalle.data.schema adds them to the section
    # (so a new source brings its own keys instead of editing the shared schema).
    defaults: Callable[[], dict[str, Any]] | None = None
    # (data, split, batch_size, process_index, process_count, num_examples=None) -> image+caption batches, for a
    # source that makes its own stream (callable or "module:attr"); None: read the built tfds dataset
    # (dalle.data.image_batches).
    image_batches: Any = None

    @property
    def is_tfds(self) -> bool:
        """Built by `dalle data` into a tfds dataset (else its examples come from `data.encoded_dir`)."""
        return self.builder is not None

    def errors(self, data: ConfigDict) -> list[str]:
        return [] if self.check is None else list(registry.resolve(self.check)(data))


def register_data_source(source: DataSource, replace: bool = False) -> DataSource:
    """Registers `source` under its name (user code does this before validating a config that names it)."""
    return registry.DATA_SOURCES.register(source.name, source, replace=replace)


def get(name: str) -> DataSource:
    """The source registered under `name`; an unknown name raises listing the known ones."""
    return registry.DATA_SOURCES.get(name)


def of(data: ConfigDict) -> DataSource:
    """The source a `data` section names."""
    return get(data.source)


def source_defaults() -> dict[str, Any]:
    """The `data` keys every registered source adds, with their defaults; two sources giving one key different
    defaults is a programming error, raised naming both."""
    out: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for name in names():
        source = get(name)
        for key, value in (source.defaults() if source.defaults else {}).items():
            if key in out and out[key] != value:
                raise ValueError(f"data sources {owner[key]!r} and {name!r} both define data.{key} with "
                                 f"different defaults ({out[key]!r} vs {value!r})")
            out[key], owner[key] = value, name
    return out


def names() -> list[str]:
    return registry.DATA_SOURCES.names()


def buildable() -> list[str]:
    """Names of the sources `dalle data` builds."""
    return [n for n in names() if get(n).is_tfds]
