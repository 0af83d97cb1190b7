"""Evaluation from a prompt file (one prompt per line): CLIP score and reranked grids across guidance scales.

    dalle eval --config configs/eval/prompts.py --checkpoint DIR --config.eval.prompts_file=prompts.txt \
        --config.eval.clip_checkpoint=checkpoints/clip_vit_b32 \
        --config.eval.fid_reference=ref_stats.npz      # from `dalle eval reference ... --images DIR`

No compositional accuracy (free text has no scene to check). FID needs eval.fid_reference (statistics of real
images made with the same feature network).
"""

from ml_collections import ConfigDict


def get_config(arg=None):
    if arg:
        raise ValueError(f"configs/eval/prompts.py has no variants (got {arg!r})")
    c = ConfigDict()
    c.name = "eval_prompts"
    c.eval = ConfigDict()
    c.eval.prompts_file = "prompts.txt"
    c.eval.splits = ()
    c.eval.num_prompts = 1000
    c.eval.condition_scales = (1.0, 3.0, 10.0)
    c.eval.num_candidates = 8
    c.eval.keep_top = 1
    c.eval.top_k = 50
    c.eval.metrics = ("clip_score", "fid", "kid")
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
