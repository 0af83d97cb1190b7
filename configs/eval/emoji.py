"""Evaluation of an emoji text-to-image model (configs/emoji_tiny.py): R-precision, zero-shot skin tone and
style, CLIP score, FID-CLIP, guidance sweep.

    dalle eval --config configs/eval/emoji.py --checkpoint outputs/emoji/dalle

Prompts are the first caption of the first `num_prompts` images of each split (validation: held-out renderings;
zero_shot: held-out emoji x skin-tone and emoji x style combinations). The CLIP is configs/clip_emoji.py's (train
split only). Reported per split and guidance scale, with and without reranking: R@1 among 100 captions (ceilings:
the real images and their VQGAN round trips), skin tone / style read back by classifiers fitted on the train split
(their accuracy on real validation images is reported with them), CLIP score, FID-CLIP against the prompts' real
images. Variants: `full` (default), `quick` (16 prompts per split, 2 scales: a smoke run). Append `,root=DIR` as
for configs/emoji_tiny.py.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("full", "quick"), default_root="outputs/emoji")
    c = ConfigDict()
    c.name = f"eval_emoji_{variant}"
    c.eval = ConfigDict()
    e = c.eval
    e.splits = ("validation", "zero_shot")
    e.num_prompts = 16 if variant == "quick" else 200
    e.batch_size = 16
    e.condition_scales = (1.0, 3.0) if variant == "quick" else (1.0, 2.0, 3.0, 5.0)
    e.num_candidates = 2 if variant == "quick" else 4
    e.keep_top = 1
    e.clip_checkpoint = f"{root}/clip/model"
    e.inception_checkpoint = f"{root}/inception"
    e.fid_fallback = "clip"
    e.metrics = ("r_precision", "skin_tone", "style", "clip_score", "fid")
    e.output_dir = ""
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
