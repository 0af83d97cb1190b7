"""One flag style for every `dalle` command: `--dashed-names`, with the `--underscored_names` spelling accepted as an
alias (older scripts and the config-override habit `--config.train.batch_size` use underscores).

Every command builds its parser with `Parser`, so a flag never exists in one spelling only, and `--help` ends with
the config-override syntax where the command reads a config.
"""

from __future__ import annotations

import argparse
from typing import Any

OVERRIDES_HELP = ("Any config key can be overridden after the flags: --config.train.batch_size=32 "
                  "--config.model.d_model=256 (dotted path = Python literal). Configs are named "
                  "(shapes_tiny:multi; `dalle config list`) or given as path/to/config.py[:variant].")


class Parser(argparse.ArgumentParser):
    """argparse with dashed long options, their underscored aliases, and raw (example-friendly) help text."""

    def __init__(self, *args: Any, takes_config: bool = False, examples: str = "", **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        epilog = [kwargs.pop("epilog", "") or ""]
        if examples:
            epilog.append("examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()))
        if takes_config:
            epilog.append(OVERRIDES_HELP)
        kwargs["epilog"] = "\n\n".join(e for e in epilog if e) or None
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        if not names or not names[0].startswith("-"):
            return super().add_argument(*names, **kwargs)
        spellings: list[str] = []
        for name in names:
            if name.startswith("--"):
                dashed = "--" + name[2:].replace("_", "-")
                spellings += [dashed, "--" + name[2:].replace("-", "_")]
            else:
                spellings.append(name)
        if "dest" not in kwargs:
            first = next((n for n in names if n.startswith("--")), None)
            if first is not None:
                kwargs["dest"] = first[2:].replace("-", "_")
        return super().add_argument(*dict.fromkeys(spellings), **kwargs)
