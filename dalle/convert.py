"""`dalle convert <what> --from SRC --out DIR`: published weights -> dalle model checkpoints."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

CONVERTERS = {
    "vqgan": ("dalle.modeling.vqgan.convert:main", "taming-transformers .ckpt or vqgan-jax flax checkpoint dir"),
    "dalle-mini": ("dalle.modeling.convert_dalle_mini:main",
                   "dalle-mini dir (config.json, flax_model.msgpack, tokenizer) + its vqgan-jax VQGAN"),
    "dvae": ("dalle.modeling.dvae.convert:main", "OpenAI DALL·E dVAE encoder/decoder state dicts (dir)"),
    "clip": ("dalle.modeling.clip.convert:main", "OpenAI CLIP or open_clip state dict"),
    "inception": ("dalle.eval.convert_inception:main", "pytorch-fid pt_inception-2015-12-05-*.pth"),
}


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] not in CONVERTERS:
        print("usage: dalle convert {" + ",".join(CONVERTERS) + "} --from SRC --out DIR", file=sys.stderr)
        for name, (_, text) in CONVERTERS.items():
            print(f"  {name:11s} {text}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module_name, func = CONVERTERS[argv[0]][0].split(":")
    return int(getattr(importlib.import_module(module_name), func)(argv[1:]) or 0)
