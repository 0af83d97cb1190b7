"""Shared pytest setup: 8 fake CPU devices unless a test process asks otherwise, and the `slow` marker."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("DALLE_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


BUCKET = "gs://bucket"


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
    """The local folder standing for gs://bucket while the fixture is active: etils' own epath mock maps
    gs://bucket/... there (tests/test_paths.py). epath sends gs:// to TensorFlow's gfile whenever TensorFlow is
    installed, bypassing the mock, and caches that choice on first use; EPATH_USE_TF=false is its documented switch,
    and the cached answer is replaced too, so the order tests run in does not matter."""
    from etils.epath import gpath

    root = tmp_path / "bucket"
    root.mkdir()
    monkeypatch.setenv("EPATH_USE_TF", "false")
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)

    def local(p):
        s = os.fspath(p)
        return str(root) + s[len(BUCKET):] if s.startswith(BUCKET) else s

    def remote(s):
        return BUCKET + s[len(str(root)):] if s.startswith(str(root)) else s

    def one(orig, p, *args, **kwargs):
        return orig(local(p), *args, **kwargs)

    def two(orig, src, dst, *args, **kwargs):
        return orig(local(src), local(dst), *args, **kwargs)

    def glob(orig, pattern):
        return [remote(os.fspath(x)) for x in orig(local(pattern))]

    from etils import epath

    with epath.testing.mock_epath(open=one, exists=one, isdir=one, listdir=one, makedirs=one, mkdir=one,
                                  remove=one, rmtree=one, stat=one, glob=glob, rename=two, replace=two, copy=two):
        yield root
