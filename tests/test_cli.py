"""dalle.cli: the lazy dispatcher, its command groups (`dalle convert`, `dalle export`) and optional-package hints."""

from __future__ import annotations

import sys
import types

import pytest

from dalle import cli, convert, export


@pytest.fixture
def fake_module(monkeypatch):
    """A module `dalle_test_fake` whose `run` records its argv and `needs_extra` imports a missing package."""
    mod = types.ModuleType("dalle_test_fake")
    mod.calls = []

    def run(argv):
        mod.calls.append(argv)
        return 3

    def needs_extra(argv):
        raise ModuleNotFoundError("No module named 'starlette'", name="starlette")

    mod.run, mod.needs_extra = run, needs_extra
    monkeypatch.setitem(sys.modules, "dalle_test_fake", mod)
    return mod


def test_group_runs_the_named_target_with_the_rest_of_argv(fake_module):
    table = {"a": ("dalle_test_fake:run", "the a target")}
    assert cli.dispatch_group("thing", table, ["a", "--from", "x"], "--from SRC") == 3
    assert fake_module.calls == [["--from", "x"]]


def test_group_usage_lists_targets_and_names_an_unknown_one(capsys, fake_module):
    table = {"a": ("dalle_test_fake:run", "the a target"), "b": ("dalle_test_fake:run", "the b target")}
    assert cli.dispatch_group("thing", table, ["c"], "--from SRC") == 2
    err = capsys.readouterr().err
    assert "usage: dalle thing {a,b} --from SRC" in err and "the b target" in err and "unknown thing target 'c'" in err
    assert cli.dispatch_group("thing", table, ["--help"], "--from SRC") == 0
    assert cli.dispatch_group("thing", table, [], "--from SRC") == 2
    assert fake_module.calls == []


def test_missing_optional_package_names_the_extra(capsys, fake_module):
    assert cli.call("dalle_test_fake:needs_extra", [], "dalle thing a") == 2
    assert "dalle thing a: needs the optional package 'starlette': pip install 'dalle[serve]'" in capsys.readouterr().err


def test_convert_and_export_list_every_target_in_their_help(capsys):
    assert cli.main(["convert", "--help"]) == 0
    err = capsys.readouterr().err
    assert all(name in err for name in convert.CONVERTERS)
    assert cli.main(["export", "--help"]) == 0
    assert all(name in capsys.readouterr().err for name in export.EXPORTERS)
