"""`encoded`: an existing `dalle encode` output (data.encoded_dir) with no tfds dataset behind it; the seqio tasks
read its shards directly (dalle.data.tasks)."""

from __future__ import annotations

from typing import Iterator

from ml_collections import ConfigDict

from dalle.data.sources import DataSource, register_data_source


def check(d: ConfigDict) -> Iterator[str]:
    if not d.encoded_dir:
        yield "data.source = 'encoded' needs data.encoded_dir"


register_data_source(DataSource(
    name="encoded",
    description="token shards written by `dalle encode` (data.encoded_dir); nothing to build",
    check=check,
))
