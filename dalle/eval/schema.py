"""Schemas of the config sections owned by dalle.eval (see dalle/config.py: register_schema).

  * `eval`: the evaluation job (`dalle eval`, dalle/eval/main.py): prompts, guidance sweep, reranking, metrics.

Light on purpose: no jax import (validation must stay cheap).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import precision, registry

FID_FALLBACKS = ("clip", "none")
# The shapes world's splits plus the eval-only ones of dalle/eval/compositional.py: `paraphrase` (the validation
# scenes captioned off the caption grammar) and `relations` (validation-stream scenes whose caption states a
# relation). A built dataset (any other source) is asked for the splits it has.
SHAPES_SPLITS = ("train", "validation", "zero_shot", "paraphrase", "relations")


def eval_defaults() -> ConfigDict:
    c = ConfigDict()
    # ---- prompts ------------------------------------------------------------------------------------------
    c.prompts_file = ""  # one prompt per line; when set, replaces the shapes splits (no compositional accuracy)
    c.splits = ("train", "validation", "zero_shot")  # shapes-world splits (train-like, validation, zero-shot)
    c.num_prompts = 64  # prompts per split (first N examples of the split: fixed and comparable across runs)
    # Shapes world: caption the splits at this data.relation_prob instead of the checkpoint's, so that models
    # trained with more relation captions are measured on the same prompts as the others (None = the checkpoint's).
    c.relation_prob = None
    c.batch_size = 8  # prompts per generate call (global; rows are sharded over the mesh batch axes)
    # ---- sampling: None = the model's `sampling` section (dalle/sampling_schema.py) --------------------------
    c.condition_scales = (1.0, 3.0)  # classifier-free guidance sweep; one set of metrics per scale
    c.num_candidates = None  # images generated per prompt (N); None = sampling.candidates
    c.keep_top = None  # best k kept by CLIP (reranking) and measured; None = sampling.keep (0 there: all N)
    c.top_k = None
    c.top_p = None
    c.temperature = None
    c.seed = 0
    # After a sweep of >= 2 scales, the model's `sampling` section gets the best scale (EVAL.md's headline: the
    # validation split's fully-correct fraction, else CLIP score) with the other settings this job sampled with.
    c.write_sampling = True
    # ---- models -------------------------------------------------------------------------------------------
    c.clip_checkpoint = ""  # dalle CLIP model dir (`dalle convert clip` or `dalle train` on configs/clip_shapes.py)
    c.inception_checkpoint = ""  # `dalle convert inception` output; "" or missing = fall back (below)
    c.fid_fallback = "clip"  # when the Inception weights are absent: "clip" (FID-CLIP) | "none" (FID not computed)
    c.vqgan_checkpoint = ""  # "" = the DALL·E checkpoint's data.vqgan_checkpoint
    c.tokenizer_path = ""  # "" = the DALL·E checkpoint's data.tokenizer_path
    # Precision of the DALL·E model's params and sampling: float32 | bfloat16 | float16 (dalle/precision.py); the
    # VQGAN round trips and decodes in float32 whatever this is.
    c.dtype = "float32"
    # ---- metrics ------------------------------------------------------------------------------------------
    c.metrics = ("compositional", "clip_score", "fid", "kid")  # names registered in dalle/eval/metrics/
    c.fid_reference = ""  # statistics .npz from `dalle eval reference`; "" = rendered images of the same prompts
    c.kid_subsets = 100
    c.kid_subset_size = 1000  # capped at the number of images
    # ---- image completion (dalle/eval/completion.py; shapes scenes with objects above and below the top row) ----
    c.completion = False  # also measure completion: the top code rows of each scene kept, the rest drawn
    c.completion_rows = 0  # code rows kept; 0 = those inside the scene grid's top row (about a third)
    # ---- outputs ------------------------------------------------------------------------------------------
    c.output_dir = ""  # "" = <checkpoint>/eval
    c.grid_prompts = 16  # prompts shown per PNG grid (all kept candidates of each)
    c.save_images = True  # every kept image as PNG under images/<scale>/<split>/
    c.progress_bar = True
    return c


def check_eval(e: ConfigDict, _: ConfigDict):
    if e.num_prompts <= 0:
        yield f"eval.num_prompts = {e.num_prompts} must be positive"
    if e.batch_size <= 0:
        yield f"eval.batch_size = {e.batch_size} must be positive"
    if not e.condition_scales:
        yield "eval.condition_scales is empty"
    for s in e.condition_scales:
        if not isinstance(s, (int, float)) or s < 0:
            yield f"eval.condition_scales entry {s!r} must be a number >= 0"
    for key, kinds in (("num_candidates", int), ("keep_top", int), ("top_k", int), ("top_p", (int, float)),
                       ("temperature", (int, float))):
        if e[key] is not None and (isinstance(e[key], bool) or not isinstance(e[key], kinds)):
            yield f"eval.{key} = {e[key]!r} must be a number (or None: the model's sampling section)"
            return
    if e.num_candidates is not None and e.num_candidates <= 0:
        yield f"eval.num_candidates = {e.num_candidates} must be positive"
    if e.keep_top is not None and not 1 <= e.keep_top <= (e.num_candidates or e.keep_top):
        yield f"eval.keep_top = {e.keep_top} must be in [1, eval.num_candidates = {e.num_candidates}]"
    for split in e.splits:
        if split not in SHAPES_SPLITS:
            yield f"eval.splits: {split!r} is not one of {SHAPES_SPLITS}"
    if not e.prompts_file and not e.splits:
        yield "eval.prompts_file is empty and eval.splits is empty: nothing to evaluate"
    for m in e.metrics:
        if m not in registry.METRICS:  # dalle/eval/metrics/, or registered by user code
            yield f"eval.metrics: {m!r} is not a registered metric (known: {', '.join(registry.METRICS.names())})"
    if e.fid_fallback not in FID_FALLBACKS:
        yield f"eval.fid_fallback = {e.fid_fallback!r} is not one of {FID_FALLBACKS}"
    if e.relation_prob is not None and (isinstance(e.relation_prob, bool) or not isinstance(
            e.relation_prob, (int, float)) or not 0.0 <= e.relation_prob <= 1.0):
        yield f"eval.relation_prob = {e.relation_prob!r} must be a number in [0, 1] (or None: the checkpoint's)"
    if e.top_p is not None and not 0.0 < e.top_p <= 1.0:
        yield f"eval.top_p = {e.top_p} must be in (0, 1]"
    if e.temperature is not None and e.temperature < 0:
        yield f"eval.temperature = {e.temperature} must be >= 0"
    dtype_problem = precision.problem(e.dtype, "eval.dtype")
    if dtype_problem:
        yield dtype_problem
    if isinstance(e.completion_rows, bool) or not isinstance(e.completion_rows, int) or e.completion_rows < 0:
        yield f"eval.completion_rows = {e.completion_rows!r} must be a whole number >= 0 (0 = the grid's top row)"
    if e.kid_subsets <= 0 or e.kid_subset_size < 2:
        yield f"eval.kid_subsets = {e.kid_subsets} must be > 0 and eval.kid_subset_size = {e.kid_subset_size} >= 2"


config_lib.register_schema("eval", eval_defaults, check_eval)


def compare_defaults() -> ConfigDict:
    """`dalle eval compare` (dalle/eval/compare.py): which methods, and where the table goes."""
    c = ConfigDict()
    c.output_dir = "outputs/compare"
    c.methods = ()  # dicts: name, method (autoregressive | clip-guided | gan) and the keys that method needs
    return c


def check_compare(c: ConfigDict, _: ConfigDict):
    from dalle.eval import compare

    if not c.methods:
        yield "compare.methods is empty: name at least one method to measure"
    methods = [m.to_dict() if isinstance(m, ConfigDict) else dict(m) for m in c.methods]
    yield from compare.check_methods(methods)


config_lib.register_schema("compare", compare_defaults, check_compare)
