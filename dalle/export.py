"""`dalle export <layout> --checkpoint DIR --out OUT`: dalle models -> the layouts other code bases load."""

from __future__ import annotations

from typing import Sequence

from dalle import cli

EXPORTERS = {
    "dalle-mini": ("dalle.modeling.export_dalle_mini:main",
                   "a dalle_bart model -> dalle-mini's config.json + flax_model.msgpack (+ BART tokenizer)"),
}


def main(argv: Sequence[str]) -> int:
    return cli.dispatch_group("export", EXPORTERS, argv, "--checkpoint DIR --out OUT")
