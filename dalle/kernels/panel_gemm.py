"""Few-row float32 matmuls that read a panel-packed weight matrix at memory bandwidth (an XLA:CPU custom call).

Why: a decode step multiplies 2-16 rows (batch x guidance branches) by every weight matrix. XLA:CPU's Eigen and
YNNPACK kernels re-pack the weights on every call and read them at 8-10 GB/s at 16 rows, half of what this
machine can stream (config/mini at batch 8: 117 vs 51 ms of matmuls per step, 56 vs 34 ms at batch 1). Packing
each weight once per `generate` call into column panels `[ceil(N / 16), K, 16]` lets a plain AVX-512 loop
(`panel_gemm.cc`) read every panel once, contiguously, for all rows.

The C++ source is compiled with the system C++ compiler (`$CXX`, default `g++`) on first use and cached by a hash
of the source, the flags and the jax version (`$DALLE_KERNEL_CACHE`, default `~/.cache/dalle/kernels`).
`available()` is False, with the reason logged once, where that cannot work (another backend, no compiler, a
failed build, `DALLE_PANEL_KERNELS=0`); callers then use `jnp.dot`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp

PANEL = 16  # columns per panel (one AVX-512 vector); must match kPanel in panel_gemm.cc
TARGET = "dalle_panel_gemm"
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "panel_gemm.cc")
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")

log = logging.getLogger(__name__)


class KernelUnavailable(RuntimeError):
    pass


def _cache_dir() -> str:
    for d in (os.environ.get("DALLE_KERNEL_CACHE"), os.path.join(os.path.expanduser("~"), ".cache", "dalle", "kernels"),
              os.path.join(tempfile.gettempdir(), f"dalle-kernels-{os.getuid()}")):
        if not d:
            continue
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise KernelUnavailable("no writable directory for compiled kernels (set DALLE_KERNEL_CACHE)")


def build(source: str = _SOURCE) -> str:
    """Compiles `source` into a shared library (once per source/flags/jax version) and returns its path."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise KernelUnavailable(f"no C++ compiler: {os.environ.get('CXX', 'g++')!r} is not on PATH")
    with open(source, "rb") as f:
        text = f.read()
    key = hashlib.sha256(text + " ".join((cxx,) + _FLAGS).encode() + jax.__version__.encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    lib = os.path.join(out_dir, f"{os.path.splitext(os.path.basename(source))[0]}-{key}.so")
    if os.path.exists(lib):
        return lib
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *_FLAGS, f"-I{jax.ffi.include_dir()}", source, "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise KernelUnavailable(f"compiling {source} failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    os.replace(tmp, lib)  # atomic: concurrent builders (several processes) all end with a complete file
    return lib


@functools.lru_cache(maxsize=None)
def _load() -> str:
    """'' when the kernel is registered with XLA:CPU, else why not."""
    if os.environ.get("DALLE_PANEL_KERNELS", "1") == "0":
        return "disabled by DALLE_PANEL_KERNELS=0"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()}, not cpu"
    try:
        lib = ctypes.cdll.LoadLibrary(build())
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.DallePanelGemm), platform="cpu")
    except (KernelUnavailable, OSError, AttributeError) as e:
        return str(e)
    return ""


def available() -> bool:
    """Whether `matmul` can run here (builds and registers the kernel on first call)."""
    reason = _load()
    if reason and not getattr(available, "_warned", False):
        available._warned = True
        log.warning("panel matmul kernel unavailable, decoding uses XLA's dot: %s", reason)
    return not reason


def packed_shape(k: int, n: int) -> tuple[int, int, int]:
    return (-(-n // PANEL), k, PANEL)


def pack(w: jax.Array) -> jax.Array:
    """`[K, N]` -> column panels `[ceil(N / 16), K, 16]` (zero-padded columns)."""
    k, n = w.shape
    p = packed_shape(k, n)[0]
    w = jnp.pad(w.astype(jnp.float32), ((0, 0), (0, p * PANEL - n)))
    return jnp.transpose(w.reshape(k, p, PANEL), (1, 0, 2))


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """`x [..., K] @ W [K, n]` in float32, with `W` given as `pack(W)`. Rows beyond 16 take extra passes."""
    k = x.shape[-1]
    if packed.shape != packed_shape(k, n):
        raise ValueError(f"packed weights {packed.shape} do not match x [..., {k}] and {n} outputs "
                         f"(expected {packed_shape(k, n)})")
    if not available():
        raise KernelUnavailable(_load())
    rows = x.reshape(-1, k).astype(jnp.float32)
    out = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32))(rows.T, packed)
    return out.reshape(x.shape[:-1] + (n,))
