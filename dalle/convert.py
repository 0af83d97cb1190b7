"""`dalle convert <what> --from SRC --out DIR`: published weights -> dalle model checkpoints."""

from __future__ import annotations

from typing import Sequence

from dalle import cli

CONVERTERS = {
    "vqgan": ("dalle.modeling.vqgan.convert:main", "taming-transformers .ckpt or vqgan-jax flax checkpoint dir"),
    "dalle-mini": ("dalle.modeling.convert_dalle_mini:main",
                   "dalle-mini dir (config.json, flax_model.msgpack, tokenizer) + its vqgan-jax VQGAN"),
    "dvae": ("dalle.modeling.dvae.convert:main", "OpenAI DALL·E dVAE encoder/decoder state dicts (dir)"),
    "clip": ("dalle.modeling.clip.convert:main", "OpenAI CLIP or open_clip state dict"),
    "inception": ("dalle.eval.convert_inception:main", "pytorch-fid pt_inception-2015-12-05-*.pth"),
}


def main(argv: Sequence[str]) -> int:
    return cli.dispatch_group("convert", CONVERTERS, argv, "--from SRC --out DIR")
