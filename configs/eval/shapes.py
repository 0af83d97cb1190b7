"""Evaluation of a captioned-shapes DALL·E model (the CPU demo): accuracy, CLIP score, FID(-CLIP), guidance sweep.

    dalle eval --config configs/eval/shapes.py --checkpoint outputs/demo/dalle
    dalle eval reference --config configs/eval/shapes.py --checkpoint outputs/demo/dalle --out outputs/demo/ref.npz

Uses the checkpoint's own data config (shapes world, tokenizer, VQGAN) and sampling section. CLIP:
configs/clip_shapes.py's export (outputs/demo/clip/model). The FID Inception is used when `dalle convert
inception` output is at eval.inception_checkpoint; otherwise FID-CLIP is reported (named so). Variants: `quick`
(8 prompts per split, 2 scales, 2 candidates: a smoke run in ~a minute), `full` (default: 200 prompts per split of
validation, zero_shot and paraphrase - the validation scenes captioned off the grammar, dalle/eval/paraphrase.py -
at guidance 1/1.5/2; accuracy with standard errors, per kind of prompt, for the CLIP-best candidate and for the
first sample alone), `multi` (`full` plus the `relations` split: 200 validation-stream scenes whose caption states a
relation, for the multi-object world). On the multi-object world, also image completion (dalle/eval/completion.py): the top code
rows of each scene with objects above and below the grid's top row kept, the rest drawn to match its caption.
Append `,root=DIR` to move every artifact, as for configs/shapes_tiny.py.
"""

from ml_collections import ConfigDict

from dalle import config as config_lib


def get_config(arg=None):
    variant, root = config_lib.variant_and_root(arg, ("full", "quick", "multi"))
    c = ConfigDict()
    c.name = f"eval_shapes_{variant}"
    c.eval = ConfigDict()
    e = c.eval
    e.splits = ("validation", "zero_shot", "paraphrase") + (("relations",) if variant == "multi" else ())
    e.num_prompts = 8 if variant == "quick" else 200  # 200: a standard error of <= 3.5 points per split
    e.batch_size = 8
    # Guidance above 2 measured worse for the demo model at every temperature tried (EVAL.md).
    e.condition_scales = (1.0, 3.0) if variant == "quick" else (1.0, 1.5, 2.0)
    # The protocol: accuracy and scores of the CLIP-best of N candidates. Temperature, top-k and top-p are the
    # model's own (its `sampling` section: configs/shapes_tiny.py's for the demo model); the job writes the best
    # scale back into that section (eval.write_sampling).
    e.num_candidates = 2 if variant == "quick" else 4
    e.keep_top = 1
    e.clip_checkpoint = f"{root}/clip/model"
    e.inception_checkpoint = f"{root}/inception"
    e.fid_fallback = "clip"
    e.output_dir = ""
    e.completion = True  # image completion on the scenes with objects above and below the top row (multi)
    c.mesh = ConfigDict(dict(axes=("data", "fsdp", "model"), shape=(-1, 1, 1)))
    return c
