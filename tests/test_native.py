"""dalle.kernels.native: the compiled-kernel cache never hands a library to the wrong CPU or from someone else."""

from __future__ import annotations

import os
import shutil

import pytest

from dalle.kernels import native

SOURCE = os.path.join(native._HERE, "panel_gemm.cc")


def test_cache_key_follows_the_host_cpu(monkeypatch):
    cxx = shutil.which("g++") or "g++"
    here = native.library_name(SOURCE, cxx)
    assert here == native.library_name(SOURCE, cxx) and here.startswith("panel_gemm-")
    monkeypatch.setattr(native, "host_target", lambda _: "-march=some-other-cpu")
    assert native.library_name(SOURCE, cxx) != here


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_host_target_names_what_march_native_resolves_to():
    assert "-march=" in native.host_target(shutil.which("g++"))


def test_cache_folder_must_be_private_and_ours(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert native._private_dir(str(shared))
    assert os.stat(shared).st_mode & 0o022 == 0  # group/other write taken away
    fresh = tmp_path / "fresh" / "kernels"
    assert native._private_dir(str(fresh)) and os.stat(fresh).st_mode & 0o077 == 0
    link = tmp_path / "link"
    os.symlink(shared, link)
    assert not native._private_dir(str(link))
    monkeypatch.setattr(native.os, "getuid", lambda: os.stat(shared).st_uid + 1)  # a folder another user made
    assert not native._private_dir(str(shared))
    monkeypatch.setenv("DALLE_KERNEL_CACHE", str(shared))
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(shared))
    monkeypatch.setattr(native.os.path, "expanduser", lambda _: str(shared))
    with pytest.raises(native.KernelUnavailable, match="no private writable directory"):
        native._cache_dir()
