"""A CPU dVAE (OpenAI DALL·E's tokenizer) for 32 px emoji (configs/emoji.py): configs/dvae_shapes.py's model, objective
and schedule (including its options against codebook collapse) with a 2x larger codebook, since designed images
(edges, shading, faces) carry more per 4x4 patch than plain shapes (BENCHMARKS.md: a k-means codebook of raw 4x4
patches, by codebook size; the emoji VQGAN, configs/vqgan_emoji.py, has 2048 codes). Its quality on the emoji
validation images: BENCHMARKS.md, "dVAE (OpenAI DALL·E's tokenizer) quality on the emoji data".

    dalle data --config configs/emoji.py
    dalle train --config configs/dvae_emoji.py --workdir outputs/emoji/dvae

Variant `folder`: your own images (configs/emoji.py:folder, `--config.data.path=DIR`). Append `,root=DIR` to move
the data (default outputs/emoji).
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None) -> ConfigDict:
    variant, root = config_lib.variant_and_root(arg, ("s32", "folder"), default_root="outputs/emoji")
    c = config_lib.sibling_config(__file__, "dvae_shapes.py").get_config()
    c.name = "dvae_emoji"
    c.model.vocab_size = 1024
    c.data = config_lib.sibling_config(__file__, "emoji.py").data_config(f"{variant},root={root}")
    return c
