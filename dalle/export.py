"""`dalle export <layout> --checkpoint DIR --out OUT`: dalle models -> the layouts other code bases load."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

EXPORTERS = {
    "dalle-mini": ("dalle.modeling.export_dalle_mini:main",
                   "a dalle_bart model -> dalle-mini's config.json + flax_model.msgpack (+ BART tokenizer)"),
}


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] not in EXPORTERS:
        print("usage: dalle export {" + ",".join(EXPORTERS) + "} --checkpoint DIR --out OUT", file=sys.stderr)
        for name, (_, text) in EXPORTERS.items():
            print(f"  {name:11s} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, func = EXPORTERS[argv[0]][0].split(":")
    return int(getattr(importlib.import_module(module_name), func)(argv[1:]) or 0)
