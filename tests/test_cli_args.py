"""dalle.cli.args: one flag style (dashes) with underscore aliases, and help that shows examples and overrides."""

from __future__ import annotations

import pytest

from dalle.cli.args import OVERRIDES_HELP, Parser


def test_both_spellings_reach_one_destination():
    p = Parser(prog="x")
    p.add_argument("--dry_run", action="store_true")
    p.add_argument("--num-processes", type=int, default=1)
    assert p.parse_args(["--dry-run", "--num_processes", "3"]).__dict__ == {"dry_run": True, "num_processes": 3}
    assert p.parse_args(["--dry_run", "--num-processes", "2"]).__dict__ == {"dry_run": True, "num_processes": 2}


def test_help_lists_the_dashed_spelling_first_with_examples_and_overrides(capsys):
    p = Parser(prog="dalle thing", takes_config=True, examples="dalle thing --config shapes_tiny")
    p.add_argument("--heartbeat_timeout_s", type=int)
    with pytest.raises(SystemExit):
        p.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--heartbeat-timeout-s HEARTBEAT_TIMEOUT_S, --heartbeat_timeout_s" in out
    assert "examples:\n  dalle thing --config shapes_tiny" in out
    assert OVERRIDES_HELP.split(":")[0] in out


@pytest.mark.parametrize("command", ["train", "demo", "data", "encode", "tokenizer"])
def test_commands_that_read_a_config_explain_overrides(command, capsys):
    from dalle import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert "--config.train.batch_size=32" in capsys.readouterr().out
