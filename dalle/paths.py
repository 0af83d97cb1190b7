"""The one path layer for what the jobs write and read by name (training workdirs, checkpoints, exported models,
their config.json and metrics.jsonl, pre-encoded data, `dalle export` outputs, eval outputs): `etils.epath`, the
layer orbax itself uses, so `--workdir gs://bucket/run` on a pod reaches the bucket instead of a local folder named
`gs:`. Paths stay plain strings at module boundaries; local
paths behave exactly as with os.path (made absolute where orbax needs it), remote ones (`scheme://...`) are never
rewritten. Files larger than a config (orbax params, TensorBoard event files) are written by their own libraries,
which take the same strings."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import IO, Any, Iterator

from etils import epath

PathLike = str | os.PathLike


REMOTE_SCHEMES = ("gs://", "s3://", "az://", "hf://")  # the URI schemes etils.epath routes to a remote backend


def is_remote(path: PathLike) -> bool:
    """`gs://bucket/x`, `s3://...`: a URI, not a local file name."""
    return os.fspath(path).startswith(REMOTE_SCHEMES)


def path(p: PathLike) -> epath.Path:
    return epath.Path(os.fspath(p))


def absolute(p: PathLike) -> str:
    """Local paths made absolute (orbax requires it), URIs unchanged."""
    p = os.fspath(p)
    return p if is_remote(p) else os.path.abspath(p)


def join(base: PathLike, *parts: str) -> str:
    return os.fspath(path(base).joinpath(*parts)) if is_remote(base) else os.path.join(os.fspath(base), *parts)


def basename(p: PathLike) -> str:
    return path(p).name


def dirname(p: PathLike) -> str:
    return os.fspath(path(p).parent)


def exists(p: PathLike) -> bool:
    return path(p).exists()


def isfile(p: PathLike) -> bool:
    return path(p).is_file()


def isdir(p: PathLike) -> bool:
    return path(p).is_dir()


def makedirs(p: PathLike) -> None:
    path(p).mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def open_file(p: PathLike, mode: str = "r") -> Iterator[IO[Any]]:
    """`with open_file(p, mode) as f`: a file object for `p` (text modes read and write UTF-8). A context manager
    only: epath's TensorFlow backend (gs:// when TensorFlow is installed) hands out its files that way."""
    with path(p).open(mode) as f:  # a file object is its own context manager; the TF backend's is a generator's
        yield f


def read_text(p: PathLike) -> str:
    return path(p).read_text()


def write_temp(p: PathLike, text: str) -> str:
    """Writes `text` to a new temporary file next to `p` and returns its name, for `replace(tmp, p)` later (several
    processes may write beside the same name: each gets its own). A failed write leaves nothing behind."""
    target = path(p)
    tmp = target.parent / f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return os.fspath(tmp)


def write_text_atomic(p: PathLike, text: str) -> None:
    """Readers see the old file or the new one, never a partial write: written next to it, then renamed over it."""
    tmp = write_temp(p, text)
    try:
        replace(tmp, p)
    except BaseException:
        remove(tmp)
        raise


def replace(src: PathLike, dst: PathLike) -> None:
    """Renames `src` (a file or a directory) to `dst`, over an existing file."""
    path(src).replace(path(dst))


def remove(p: PathLike) -> None:
    path(p).unlink(missing_ok=True)


def rmtree(p: PathLike) -> None:
    """Deletes a directory tree; a missing one is not an error."""
    path(p).rmtree(missing_ok=True)


def glob(directory: PathLike, pattern: str) -> list[str]:
    """Sorted paths in `directory` matching `pattern` (no recursion)."""
    d = path(directory)
    if not d.exists():
        return []
    return sorted(os.fspath(x) for x in d.glob(pattern))
