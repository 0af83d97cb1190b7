"""`dalle eval ...`: the evaluation job (dalle/eval/main.py, with its `reference` subcommand) and `dalle eval compare`
(dalle/eval/compare.py, which runs that job once per method)."""

from __future__ import annotations

from typing import Sequence


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == ["compare"]:
        from dalle.eval import compare

        return compare.main(argv[1:])
    from dalle.eval import main as eval_main

    return eval_main.main(argv)
