"""Pinned npm package tarballs as data: `npm pack NAME@VERSION` into a cache folder, checked against a pinned
Subresource-Integrity hash (the `integrity` field npm prints and package-lock.json stores, e.g. "sha512-<base64>").

npm is the only registry these machines reach, and some packages ship real captioned images (the emoji-datasource-*
packages). `npm pack` downloads a package's tarball without installing it or running its scripts. A tarball is
written to a temporary name and moved into place only after its hash matched, so the cache never holds a partial or
unverified file; a cached file is re-checked on every use.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

_SPEC = re.compile(r"^(?P<name>(@[a-z0-9._-]+/)?[a-z0-9._-]+)@(?P<version>[0-9][0-9A-Za-z.+-]*)$")
_ALGORITHMS = ("sha512", "sha384", "sha256", "sha1")


class NpmError(RuntimeError):
    """npm missing, the registry unreachable, or a tarball that does not match its pinned hash."""


@dataclasses.dataclass(frozen=True)
class PinnedPackage:
    """One `name@version integrity` pin, e.g. "emoji-datasource-twitter@16.0.0 sha512-7F+u..."."""

    name: str
    version: str
    integrity: str

    @classmethod
    def parse(cls, text: str) -> "PinnedPackage":
        """Parses "name@version sha512-..."; raises ValueError naming what is wrong."""
        parts = str(text).split()
        if len(parts) != 2:
            raise ValueError(f"package pin {text!r} must be 'name@version <algorithm>-<base64 hash>'")
        spec, integrity = parts
        m = _SPEC.match(spec)
        if not m:
            raise ValueError(f"package pin {text!r}: {spec!r} is not 'name@version' with an exact version")
        algorithm, _, digest = integrity.partition("-")
        if algorithm not in _ALGORITHMS or not digest:
            raise ValueError(f"package pin {text!r}: integrity {integrity!r} is not '<{'|'.join(_ALGORITHMS)}>-<base64>'")
        try:
            base64.b64decode(digest, validate=True)
        except ValueError:
            raise ValueError(f"package pin {text!r}: the integrity hash is not base64") from None
        return cls(m["name"], m["version"], integrity)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball_name(self) -> str:
        """The file name `npm pack` writes (a scope's '@' dropped and '/' turned into '-')."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


def integrity_of(path: str, algorithm: str = "sha512") -> str:
    """The Subresource-Integrity string of a file ("sha512-<base64>")."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{algorithm}-{base64.b64encode(h.digest()).decode('ascii')}"


def check_integrity(path: str, pin: PinnedPackage) -> None:
    """Raises NpmError naming the file, the pinned and the actual hash when they differ."""
    algorithm = pin.integrity.partition("-")[0]
    actual = integrity_of(path, algorithm)
    if actual != pin.integrity:
        raise NpmError(f"{path}: integrity {actual} does not match the pinned {pin.integrity} of {pin.spec}; "
                       f"refusing it (delete the file to download it again)")


def fetch(pin: PinnedPackage, cache_dir: str, npm: str = "npm", timeout_s: float = 600.0) -> str:
    """The path of the verified tarball of `pin` in `cache_dir`, downloaded with `npm pack` when absent."""
    cache_dir = os.path.abspath(cache_dir)  # npm resolves --pack-destination against its own working directory
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, pin.tarball_name)
    if os.path.isfile(path):
        check_integrity(path, pin)
        return path
    exe = shutil.which(npm)
    if exe is None:
        raise NpmError(f"`{npm}` is not installed: it fetches {pin.spec}. Install it (Debian: "
                       f"`apt-get install -y npm`, which `make setup` does) or put the tarball at {path} "
                       f"(`npm pack {pin.spec}` in {cache_dir})")
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".npm-pack-") as tmp:
        try:
            result = subprocess.run([exe, "pack", pin.spec, "--loglevel=error", "--pack-destination", tmp],
                                    cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise NpmError(f"`npm pack {pin.spec}` did not finish in {timeout_s:.0f} s: is the npm registry "
                           f"reachable? (run it by hand in {cache_dir} to see)") from None
        got = os.path.join(tmp, pin.tarball_name)
        if result.returncode != 0 or not os.path.isfile(got):
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise NpmError(f"`npm pack {pin.spec}` failed (exit {result.returncode}): {' / '.join(detail)}. "
                           f"Is the npm registry reachable? Run `npm pack {pin.spec}` in {cache_dir} to retry")
        check_integrity(got, pin)
        os.replace(got, path)
    return path
