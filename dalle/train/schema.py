"""Schemas of the `mesh` and `train` config sections, and the root keys (see dalle/config.py)."""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import precision


def root_defaults() -> ConfigDict:
    c = ConfigDict()
    c.name = ""  # experiment name, shown in logs
    c.seed = 0
    return c


def mesh_defaults() -> ConfigDict:
    c = ConfigDict()
    c.axes = ("data", "fsdp", "model")
    c.shape = (-1, 1, 1)  # -1 = all remaining devices
    # (logical axis, mesh axis | tuple | None) pairs that take precedence over dalle.sharding.DEFAULT_LOGICAL_RULES.
    c.logical_rules = ()
    # > 0: build for this many devices instead of the visible ones (ahead-of-time compile for a bigger topology).
    c.target_devices = 0
    return c


def check_mesh(mesh: ConfigDict, _: ConfigDict):
    axes, shape = tuple(mesh.axes), tuple(mesh.shape)
    if len(axes) != len(shape):
        yield f"mesh.axes {axes} and mesh.shape {shape} have different lengths"
        return
    if len(set(axes)) != len(axes):
        yield f"mesh.axes {axes} repeats a name"
    if sum(1 for s in shape if s == -1) > 1:
        yield f"mesh.shape {shape} has more than one -1"
    for a, s in zip(axes, shape):
        if not isinstance(s, int) or s == 0 or s < -1:
            yield f"mesh.shape[{a}] = {s!r} must be a positive int or -1"
            return
    for rule in mesh.logical_rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2:
            yield f"mesh.logical_rules entry {rule!r} must be a (logical_axis, mesh_axes) pair"
            continue
        targets = () if rule[1] is None else (rule[1],) if isinstance(rule[1], str) else tuple(rule[1])
        for t in targets:
            if t not in axes:
                yield f"mesh.logical_rules: {rule[0]!r} -> {t!r}, but mesh.axes is {axes}"
    import jax  # only now: validation of the rest stays cheap

    n = mesh.target_devices or jax.device_count()
    fixed = 1
    for s in shape:
        if s != -1:
            fixed *= s
    if fixed > n or (-1 in shape and n % fixed):
        yield (f"mesh.shape {shape} needs {fixed}{'x' if -1 in shape else ''} devices but there are {n} "
               f"(mesh.target_devices={mesh.target_devices})")


def train_defaults() -> ConfigDict:
    c = ConfigDict()
    c.batch_size = 8  # global batch, split over processes and the mesh batch axes
    c.grad_accum_steps = 1  # microbatches per step, scanned inside the jitted step
    c.num_steps = 1000
    c.max_minutes = 0.0  # > 0: stop (and checkpoint) after this much wall time
    c.optimizer = ConfigDict()
    c.optimizer.name = "adamw"  # adamw | adam | adafactor | lion | sgd
    c.optimizer.lr = 1e-3
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.decay_norms_and_biases = False
    c.schedule = ConfigDict()
    c.schedule.name = "cosine"  # cosine | linear | constant | rsqrt
    c.schedule.warmup_steps = 100
    c.schedule.end_fraction = 0.0
    c.grad_clip_norm = 1.0  # 0 disables
    c.freeze_encoder = False
    c.embeddings_only = False
    c.compute_dtype = "float32"  # float32 | bfloat16 (params stay float32)
    c.remat = False
    c.log_every = 50
    c.eval_every = 500
    c.eval_batches = 4
    # TensorBoard image samples every this many steps (0 = never): the text-to-image models draw one image per
    # `sample_prompts` prompt, sampled as the exported model will be; the VQGAN shows reconstructions.
    c.sample_every = 1000
    c.sample_prompts = ()
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.max_nonfinite_in_a_row = 10
    c.peak_flops = 0.0  # per device, FLOP/s; 0 = do not report MFU
    c.progress_bar = True
    return c


_OPTIMIZERS = ("adamw", "adam", "adafactor", "lion", "sgd")
_SCHEDULES = ("cosine", "linear", "constant", "rsqrt")


def check_train(t: ConfigDict, _: ConfigDict):
    if t.batch_size <= 0:
        yield f"train.batch_size = {t.batch_size} must be positive"
    if t.grad_accum_steps <= 0:
        yield f"train.grad_accum_steps = {t.grad_accum_steps} must be positive"
    elif t.batch_size % t.grad_accum_steps:
        yield f"train.batch_size = {t.batch_size} is not divisible by train.grad_accum_steps = {t.grad_accum_steps}"
    if t.optimizer.name not in _OPTIMIZERS:
        yield f"train.optimizer.name = {t.optimizer.name!r} is not one of {_OPTIMIZERS}"
    if t.schedule.name not in _SCHEDULES:
        yield f"train.schedule.name = {t.schedule.name!r} is not one of {_SCHEDULES}"
    if t.optimizer.lr <= 0:
        yield f"train.optimizer.lr = {t.optimizer.lr} must be positive"
    dtype_problem = precision.problem(t.compute_dtype, "train.compute_dtype")
    if dtype_problem:
        yield dtype_problem
    if t.freeze_encoder and t.embeddings_only:
        yield "train.freeze_encoder and train.embeddings_only are mutually exclusive"


def check_batch_against_mesh(config: ConfigDict, _: ConfigDict):
    """Every microbatch must split evenly over the mesh axes `batch` maps to, and the global batch over the
    processes: otherwise the first step fails deep inside jax with a shape error."""
    if "train" not in config or "mesh" not in config:
        return
    t, mesh = config.train, config.mesh
    if t.batch_size <= 0 or t.grad_accum_steps <= 0 or t.batch_size % t.grad_accum_steps:
        return  # check_train reports these
    import jax

    from dalle import sharding

    try:
        shape = sharding.resolve_mesh_shape(mesh.axes, mesh.shape, mesh.target_devices or jax.device_count())
    except sharding.ShardingError:
        return  # check_mesh reports it
    sizes = dict(zip(mesh.axes, shape))
    shards = sharding.logical_axis_shards("batch", sharding.rules_from_config(config), sizes)
    micro = t.batch_size // t.grad_accum_steps
    if micro % shards:
        per = f" (microbatches of {micro})" if t.grad_accum_steps > 1 else ""
        yield (f"train.batch_size = {t.batch_size}{per} does not split over the {shards} batch shards of mesh "
               f"{dict(sizes)}: use a multiple of {shards}")
    processes = jax.process_count()
    if not mesh.target_devices and t.batch_size % processes:
        yield f"train.batch_size = {t.batch_size} does not split over the {processes} processes"


config_lib.register_global_check(check_batch_against_mesh)
config_lib.register_schema("", root_defaults)
config_lib.register_schema("mesh", mesh_defaults, check_mesh)
config_lib.register_schema("train", train_defaults, check_train)


def check_model_against_data(config: ConfigDict, _: ConfigDict):
    """The text side of a text-to-image model must fit the data's tokenizer and text length."""
    if "model" not in config or "data" not in config:
        return
    m, d = config.model, config.data
    from dalle import kinds  # registers the kinds, which import this package's config module

    if not kinds.get(m.kind).text_to_image:
        return
    if "max_text_length" in d and m.max_text_length != d.max_text_length:
        yield (f"model.max_text_length = {m.max_text_length} differs from data.max_text_length = "
               f"{d.max_text_length}")
    text_vocab = m.get("encoder_vocab_size", m.get("text_vocab_size"))
    real = _tokenizer_size(d.get("tokenizer_path", ""))
    if real and text_vocab is not None and text_vocab < real:
        which = "encoder_vocab_size" if "encoder_vocab_size" in m else "text_vocab_size"
        yield f"model.{which} = {text_vocab} is smaller than the tokenizer's {real} pieces ({d.tokenizer_path})"


def _tokenizer_size(path: str) -> int:
    """The real size of a trained sentencepiece model (from the .json written beside it), 0 when unknown."""
    import json
    import os

    info = path + ".json"
    if not path or not os.path.isfile(info):
        return 0
    with open(info) as f:
        return int(json.load(f).get("vocab_size", 0))


config_lib.register_global_check(check_model_against_data)
