"""Every command in the README refers to a real subcommand, real config files and valid overrides.

`make demo` and `make test` themselves are run by CI (.ci/run runs `make test`; the demo pipeline's stages are run
end to end on a tiny pipeline by tests/test_demo.py)."""
# bazel: manual  (reads README.md and configs from the checkout; pytest runs it in `make test`)

import os
import re
import shlex

import pytest

from dalle import cli
from dalle import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                cmds.append(line)
    return cmds


def test_readme_has_the_two_setup_commands_first():
    cmds = _commands()
    assert cmds[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("line", [c for c in _commands() if c.startswith(".venv/bin/dalle")])
def test_dalle_commands_are_valid(line, capsys):
    argv = shlex.split(line)[1:]
    name = argv[0]
    assert name in cli.COMMANDS, f"README uses unknown command dalle {name}"
    if "--config" in argv:
        spec = argv[argv.index("--config") + 1]
        overrides = [a for a in argv if a.startswith("--config.")]
        config_lib.load_config(os.path.join(ROOT, spec) if not os.path.isabs(spec) else spec,
                               overrides, validate_config=not spec.startswith(("configs/dalle_mega",)))
    sub = argv[:2] if name in ("convert", "export", "tokenizer") else argv[:1]
    with pytest.raises(SystemExit) as e:
        cli.main(sub + ["--help"])
    assert e.value.code == 0
