"""Builds and registers the C++ XLA:CPU custom calls in this package (compiled on first use, then cached).

Each `<name>.cc` here is compiled with the system C++ compiler (`$CXX`, default `g++`, `-O3 -march=native`, then
`$DALLE_KERNEL_CXXFLAGS`) into `$DALLE_KERNEL_CACHE` (default `~/.cache/dalle/kernels`, else a per-user temporary
directory; each used only if it is a 0700-style folder this user owns), keyed by a hash of the source and the
package's headers, the flags, the jax version and the host CPU that `-march=native` targets, and its FFI handlers are
registered with XLA:CPU.
Where that cannot work (another backend, no compiler, a failed build, `DALLE_NATIVE_KERNELS=0`) `available(name)`
is False and the reason is logged once; callers then stay on XLA's own ops.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile

import jax

_HERE = os.path.dirname(os.path.abspath(__file__))
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-w")


def compile_flags() -> tuple[str, ...]:
    """Our flags, then `$DALLE_KERNEL_CXXFLAGS` (e.g. `-mno-avx512f`: the portable loops on an AVX-512 host, which
    is how the tests run the branch other CPUs take)."""
    return _FLAGS + tuple(shlex.split(os.environ.get("DALLE_KERNEL_CXXFLAGS", "")))

log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    pass


def _private_dir(d: str) -> bool:
    """Creates `d` (mode 0700) and accepts it only if it is a real directory that this user owns and nobody else
    can write to: a shared or planted folder could hand us a library that runs someone else's code."""
    try:
        os.makedirs(d, mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        log.warning("kernel cache %s is not a directory owned by this user; not using it", d)
        return False
    if st.st_mode & 0o022:
        try:
            os.chmod(d, st.st_mode & ~0o022)
        except OSError:
            return False
    return os.access(d, os.W_OK)


def _cache_dir() -> str:
    for d in (os.environ.get("DALLE_KERNEL_CACHE"), os.path.join(os.path.expanduser("~"), ".cache", "dalle", "kernels"),
              os.path.join(tempfile.gettempdir(), f"dalle-kernels-{os.getuid()}")):
        if d and _private_dir(d):
            return d
    raise KernelUnavailable("no private writable directory for compiled kernels (set DALLE_KERNEL_CACHE to a "
                            "folder you own)")


@functools.lru_cache(maxsize=None)
def host_target(cxx: str) -> str:
    """What `-march=native` means on this machine: the compiler's resolved target options (GCC), else the CPU's
    model and feature flags. Part of the cache key, so that a cache shared between machines (an NFS home) never
    hands one CPU a library built for another's instruction set."""
    try:
        out = subprocess.run([cxx, "-march=native", "-Q", "--help=target"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and "-march=" in out.stdout:
            return out.stdout
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu += "".join(sorted({line for line in f if line.split(":")[0].strip() in ("model name", "flags",
                                                                                       "Features")}))
    except OSError:
        pass
    return cpu


def library_name(source: str, cxx: str) -> str:
    """`<name>-<key>.so`: the key hashes the source and the headers next to it (e.g. parallel.h), the compiler and
    flags, the jax version and the host CPU target."""
    text = b""
    folder = os.path.dirname(source)
    for path in [source] + sorted(os.path.join(folder, h) for h in os.listdir(folder) if h.endswith(".h")):
        with open(path, "rb") as f:
            text += f.read()
    key = hashlib.sha256(text + " ".join((cxx,) + compile_flags()).encode() + jax.__version__.encode()
                         + host_target(cxx).encode()).hexdigest()[:16]
    return f"{os.path.splitext(os.path.basename(source))[0]}-{key}.so"


def build(source: str) -> str:
    """Compiles `source` into a shared library (once per source/flags/jax version) and returns its path."""
    compiler = os.environ.get("CXX", "g++")
    cxx = shutil.which(compiler)
    if cxx is None:
        raise KernelUnavailable(f"no C++ compiler: {compiler!r} is not on PATH")
    out_dir = _cache_dir()
    lib = os.path.join(out_dir, library_name(source, cxx))
    if os.path.exists(lib):
        return lib
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *compile_flags(), f"-I{jax.ffi.include_dir()}", source, "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise KernelUnavailable(f"compiling {source} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    os.replace(tmp, lib)  # atomic: concurrent builders (several processes) all end with a complete file
    return lib


@functools.lru_cache(maxsize=None)
def _load(name: str, targets: tuple[tuple[str, str], ...]) -> str:
    """Builds `<name>.cc` and registers `(target, symbol)` handlers; '' on success, else why not."""
    if os.environ.get("DALLE_NATIVE_KERNELS", "1") == "0":
        return "disabled by DALLE_NATIVE_KERNELS=0"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()}, not cpu"
    try:
        lib = ctypes.cdll.LoadLibrary(build(os.path.join(_HERE, f"{name}.cc")))
        for target, symbol in targets:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except (KernelUnavailable, OSError, AttributeError) as e:
        return str(e)
    return ""


_warned: set[str] = set()


def available(name: str, targets: tuple[tuple[str, str], ...]) -> bool:
    """Whether the kernels of `<name>.cc` can run here (built and registered on the first call)."""
    reason = _load(name, targets)
    if reason and name not in _warned:
        _warned.add(name)
        log.warning("native kernel %s unavailable, XLA's own ops are used instead: %s", name, reason)
    return not reason


def why_unavailable(name: str, targets: tuple[tuple[str, str], ...]) -> str:
    return _load(name, targets)
