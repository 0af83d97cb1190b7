"""Progress on stderr for jobs that take minutes but are not loops over items: a conversion reads weights, converts
them and writes a checkpoint (dalle-mega's take minutes each). A tqdm bar over the job's named stages shows which
one is running and the time spent; loops over items (training steps, prompts, captions) use tqdm directly."""

from __future__ import annotations

import sys
from typing import Sequence


class Stages:
    """`with Stages("dalle convert vqgan", ("read", "write")) as stages: stages.start("read"); ...`: stages may be
    skipped (the bar jumps ahead) but not revisited; the bar completes when the block ends without an error."""

    def __init__(self, desc: str, names: Sequence[str], enabled: bool | None = None):
        """`enabled=None`: shown when stderr is a terminal (tqdm's rule), so logs and captured errors stay clean."""
        from tqdm import tqdm

        self.names = tuple(names)
        self._done = 0
        self._current = -1
        self._bar = tqdm(total=len(self.names), desc=desc, unit="stage", file=sys.stderr, disable=not enabled,
                         bar_format="{desc}: {n_fmt}/{total_fmt} stages [{elapsed}]{postfix}")

    def start(self, name: str) -> None:
        """Marks every stage before `name` done and shows `name` as running."""
        if name not in self.names:
            raise ValueError(f"unknown stage {name!r}: expected one of {self.names}")
        index = self.names.index(name)
        if index <= self._current:
            raise ValueError(f"stage {name!r} already started (stages run in the order {self.names})")
        self._bar.update(index - self._done)
        self._done, self._current = index, index
        self._bar.set_postfix_str(name)

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._bar.update(len(self.names) - self._done)
            self._done = len(self.names)
            self._bar.set_postfix_str("done")
        self._bar.close()

    @property
    def completed(self) -> int:
        return self._done
