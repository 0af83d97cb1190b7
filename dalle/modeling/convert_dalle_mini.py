"""`dalle convert dalle-mini --from DIR --out OUT`: a dalle-mini checkpoint -> a dalle model directory that
`dalle generate "a prompt" --checkpoint OUT` runs with no other flag.

DIR is dalle-mini's published layout: its `config.json` and `flax_model.msgpack` (scanned `use_scan` layout or one
module per layer) and its BART tokenizer (`tokenizer.json`, or `vocab.json` + `merges.txt`), copied to
OUT/tokenizer (read with `dalle.tokenizers.bart_bpe.BpeVocabulary`). The VQGAN that draws the codes is
  * `--vqgan PATH`: a vqgan-jax checkpoint (`config.json` + `flax_model.msgpack`, e.g. dalle-mini's
    vqgan_imagenet_f16_16384) or an already converted dalle VQGAN model directory (`dalle convert vqgan`); else
  * the vqgan-jax checkpoint found next to DIR: first among DIR's immediate subfolders (DIR/vqgan, ...), then
    among the folders beside DIR (its parent's immediate subfolders, e.g. downloads/vqgan_imagenet_f16_16384 for
    DIR = downloads/dalle-mini). A folder counts when it holds `flax_model.msgpack` and a config.json with every
    vqgan-jax architecture key, and it is taken when its codebook size and token grid fit the model; several that
    fit at the same level, or none, is an error that says to pass --vqgan.
A vqgan-jax VQGAN is converted into OUT/vqgan (dalle/modeling/vqgan/convert.py); a converted one is recorded where
it is. OUT's config records `data.tokenizer_path = "tokenizer"` and `data.vqgan_checkpoint = "vqgan"` (or the
converted VQGAN's absolute path): relative paths resolve from OUT (`model_dir.resolve_path`), so OUT works from
any working directory and can be moved. Prompts are normalized as dalle-mini's processor does: `data.text_normalizer
= "dalle_mini"` (its TextNormalizer, dalle/data/dalle_mini_text.py) when config.json says `normalize_text: true`,
else "none" (the raw prompt); its hashtag word list, `enwiki-words-frequency.txt`, is copied with the tokenizer
files when DIR has it. `--weights-only` converts the transformer alone (for `model.init_from` /
`model.encoder_init`), without requiring a tokenizer or a VQGAN.

`load` does the same in memory (no OUT): `dalle.generation.Generator.from_pretrained` uses it on a raw DIR.

What changes on the way (the function computed does not):
  * layer parameters are stacked for `hk.layer_stack` whatever the source layout; per-layer norms that dalle-mini
    creates only in some layers (Swin v2's every-6th-layer norm, the scale-less last post-LN norm of unscanned
    models) get identity values where absent, and a per-layer flag decides where they apply;
  * text ids 0 and 1 are swapped (dalle pads with 0; BART's `<s>` is 0 and `<pad>` is 1): rows 0 and 1 of the
    text embedding are swapped and the BPE vocabulary swaps ids the same way;
  * `image_vocab_size` becomes the number of VQGAN codes (= dalle-mini's decoder_start_token_id, 16384) and the
    rest of dalle-mini's larger image vocabulary is `image_extra_tokens`; table sizes are unchanged;
  * dalle-mini's `smelu` (which returns 0.25 below -1) becomes `smelu_dallemini`;
  * the weights keep the precision they are stored in (dalle-mega's float16 stays float16) unless `--dtype`
    (float32 | bfloat16 | float16) asks for another.

Switches this code cannot reproduce are refused with an error naming them (`use_alibi`, tied embeddings, ...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import precision, weights_files
from dalle.cli.args import Parser
from dalle.modeling import norm_placement
from dalle.modeling import schema as model_schema
from dalle.progress import Stages


ConversionError = weights_files.ConversionError  # a checkpoint that cannot be converted; names the key or param


# dalle-mini's DalleBartConfig defaults (configuration.py), for keys a config.json leaves out.
DALLE_MINI_DEFAULTS: dict[str, Any] = dict(
    encoder_vocab_size=50264, image_vocab_size=16384, image_length=256, max_text_length=64, encoder_layers=12,
    encoder_ffn_dim=4096, encoder_attention_heads=16, decoder_layers=12, decoder_ffn_dim=4096,
    decoder_attention_heads=16, activation_function="gelu", d_model=1024, dropout=0.1, attention_dropout=0.0,
    activation_dropout=0.0, init_std=0.02, scale_embedding=False, gradient_checkpointing=True, use_bias=False,
    ln_type="layernorm", ln_positions="normformer", use_head_scale=False, use_cosine_attention=False, tau_init=0.05,
    use_absolute_position_embeddings=True, use_swin_position_embeddings=False, use_deepnet_scaling=False,
    use_subln_init=False, use_glu=True, use_alibi=False, sinkhorn_iters=1, use_final_ln_encoder=True,
    use_final_ln_decoder=True, force_ln_scale=False, tie_word_embeddings=False, is_encoder_decoder=True,
    normalize_text=False,
)
_COPIED = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
           "encoder_ffn_dim", "decoder_ffn_dim", "encoder_vocab_size", "max_text_length", "image_length", "ln_type",
           "ln_positions", "use_glu", "use_bias", "use_head_scale", "use_cosine_attention", "tau_init",
           "use_absolute_position_embeddings", "use_swin_position_embeddings", "use_deepnet_scaling",
           "use_subln_init", "sinkhorn_iters", "use_final_ln_encoder", "use_final_ln_decoder", "force_ln_scale",
           "scale_embedding", "dropout", "attention_dropout", "activation_dropout", "init_std")
# Keys of dalle-mini's config that only matter to HF generation/training plumbing.
_IGNORED = {"gradient_checkpointing", "use_scan", "use_cache", "normalize_text", "do_sample", "min_length",
            "max_length", "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
            "forced_eos_token_id", "forced_bos_token_id", "image_vocab_size", "activation_function",
            "tie_word_embeddings", "is_encoder_decoder", "use_alibi", "encoder_layerdrop", "decoder_layerdrop"}


def model_config_from_dalle_mini(dm: Mapping[str, Any]) -> ConfigDict:
    """dalle-mini config.json -> our `model` section (kind dalle_bart). Refuses what cannot be reproduced."""
    c = dict(DALLE_MINI_DEFAULTS, **dm)
    refused = []
    if c["use_alibi"]:
        refused.append("use_alibi=True (ALiBi is not implemented in dalle-mini either)")
    if c["tie_word_embeddings"]:
        refused.append("tie_word_embeddings=True (dalle-mini's text and image vocabularies differ)")
    if not c["is_encoder_decoder"]:
        refused.append("is_encoder_decoder=False")
    act = {"smelu": "smelu_dallemini"}.get(c["activation_function"], c["activation_function"])
    if act not in model_schema.ACTIVATIONS:
        refused.append(f"activation_function={c['activation_function']!r}")
    unknown = sorted(k for k in dm if k.startswith("use_") and k not in _COPIED and k not in _IGNORED)
    refused += [f"{k}={dm[k]!r} (unknown switch)" for k in unknown if dm[k]]
    codes = int(c.get("decoder_start_token_id", c["image_vocab_size"]))
    if not 0 < codes <= c["image_vocab_size"]:
        refused.append(f"decoder_start_token_id={codes} outside the image vocabulary (size {c['image_vocab_size']})")
    if refused:
        raise ConversionError("unsupported dalle-mini switches: " + "; ".join(refused))
    out = model_schema.dalle_bart_defaults()
    for k in _COPIED:
        v = c[k]
        out[k] = float(v) if isinstance(out[k], float) else v
    if out.ln_positions in norm_placement.names():
        out.ln_positions = norm_placement.canonical(out.ln_positions)  # dalle-mini reads "deepnet" as "postln"
    out.activation_function = act
    out.image_vocab_size = codes
    out.image_extra_tokens = int(c["image_vocab_size"]) - codes
    out.remat = False
    out.scan_layers = True
    errors = list(model_schema.check_dalle_bart(out, ConfigDict()))
    if errors:
        raise ConversionError("the converted config is invalid:\n  " + "\n  ".join(errors))
    return out


# --------------------------------------------------------------------------------------------------------------
# Parameter mapping
# --------------------------------------------------------------------------------------------------------------
def _layer_module_map(cfg: ConfigDict, side: str) -> list[tuple[str, str]]:
    """(dalle-mini module path inside one layer, our module path inside `layer`), in flax's creation order.

    Flax names compact submodules `Class_i`, counting per class in creation order; this replays dalle-mini's
    FlaxBart{Encoder,Decoder}Layer / GLU / FFN to know which `LayerNorm_i` is which; the norms present are those
    of the placement's `norm_placement` row (the sub-LN norm before out_proj lives inside the attention module:
    see `_leaf_map`).
    """
    place = norm_placement.get(cfg.ln_positions)
    norm_cls = "LayerNorm" if cfg.ln_type == "layernorm" else "RMSNorm"
    out: list[tuple[str, str]] = []
    count = {"layer": 0}

    def norm(ours: str, scope: str = "layer", prefix: str = "") -> None:
        out.append((f"{prefix}{norm_cls}_{count[scope]}", ours))
        count[scope] += 1

    def attention(index: int, ours: str) -> None:
        if place.has_attn_pre(side):
            norm(f"{ours}_pre_norm")
        out.append((f"FlaxBartAttention_{index}", ours))
        if place.attn_post:
            norm(f"{ours}_post_norm")
        if place.attn_residual:
            norm(f"{ours}_residual_norm")

    attention(0, "self_attn")
    if side == "decoder":
        attention(1, "cross_attn")
    ffn = "GLU_0/" if cfg.use_glu else "FFN_0/"
    count["ffn"] = 0
    if place.ffn_pre:
        norm("ffn/pre_norm", "ffn", ffn)
    dense = ["wi_0", "wi_1", "wo"] if cfg.use_glu else ["wi_0", "wo"]
    for i, name in enumerate(dense[:-1]):
        out.append((f"{ffn}Dense_{i}", f"ffn/{name}"))
    if place.ffn_mid:
        norm("ffn/mid_norm", "ffn", ffn)
    out.append((f"{ffn}Dense_{len(dense) - 1}", "ffn/wo"))
    if place.ffn_post:
        norm("ffn/post_norm", "ffn", ffn)
    if place.output_every:
        norm("output_norm")
    return out


def _leaf_map(flax_module: str, ours: str, leaf: str) -> tuple[str, str]:
    """A leaf inside a mapped module -> (our module path, our param name)."""
    if flax_module.startswith("FlaxBartAttention_"):
        if leaf == "head_scale":
            return ours, "head_scale"
        if leaf == "rel_bias/embedding":
            return ours, "rel_bias"
        if leaf.startswith("mid_layernorm/"):
            return f"{ours}/mid_norm", leaf.split("/", 1)[1]
    module, _, param = leaf.rpartition("/")
    return (f"{ours}/{module}" if module else ours), param


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def convert_params(flat: Mapping[str, np.ndarray], cfg: ConfigDict, target: Mapping[str, Any]) -> dict:
    """dalle-mini flat params (`model/encoder/...`, `lm_head/kernel`) -> our Haiku params matching `target`
    (abstract params of `build_model(cfg)`: the structure and shapes every output must have)."""
    flat = {k[len("params/"):] if k.startswith("params/") else k: np.asarray(v) for k, v in flat.items()}
    stored = _stored_dtype(flat)  # identity-filled norms get the precision of the weights around them
    used: set[str] = set()
    ours: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}  # our module -> the dalle-mini module it comes from (for error messages)

    def take(src: str) -> np.ndarray:
        if src not in flat:
            raise ConversionError(f"dalle-mini checkpoint has no parameter {src!r}")
        used.add(src)
        return flat[src]

    for side in ("encoder", "decoder"):
        base = f"dalle_bart/{side}"
        emb = take(f"model/{side}/embed_tokens/embedding").copy()
        if side == "encoder":
            emb[[0, 1]] = emb[[1, 0]]  # BART <s>=0/<pad>=1 -> dalle pad=0 (see bpe_vocab.py)
        ours[f"{base}/embed_tokens/embedding"] = emb
        for name in ("embed_positions/embedding", "layernorm_embedding/scale", "layernorm_embedding/bias",
                     "final_ln/scale", "final_ln/bias"):
            src = f"model/{side}/{name}"
            if src in flat:
                ours[f"{base}/{name}"] = take(src)
        n = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
        cls = "FlaxBartEncoderLayer" if side == "encoder" else "FlaxBartDecoderLayer"
        scanned = any(k.startswith(f"model/{side}/layers/{cls}s/") for k in flat)
        layer_roots = ([f"model/{side}/layers/{cls}s"] if scanned
                       else [f"model/{side}/layers/{cls}_{i}" for i in range(n)])
        for flax_module, our_module in _layer_module_map(cfg, side):
            origin[f"{base}/layers/layer/{our_module}/"] = f"{layer_roots[0]}/{flax_module}"
            leaves = sorted({k[len(r) + len(flax_module) + 2:] for r in layer_roots for k in flat
                             if k.startswith(f"{r}/{flax_module}/")})
            # Every param our module has must come from somewhere (identity fill only for per-layer norms).
            for leaf in leaves:
                mod, param = _leaf_map(flax_module, our_module, leaf)
                key = f"{base}/layers/layer/{mod}/{param}"
                if scanned:
                    arr = take(f"{layer_roots[0]}/{flax_module}/{leaf}")
                else:
                    parts = []
                    for root in layer_roots:
                        src = f"{root}/{flax_module}/{leaf}"
                        if src in flat:
                            parts.append(take(src))
                        elif our_module == "output_norm":  # absent in layers where dalle-mini adds no norm
                            parts.append(None)
                        else:
                            raise ConversionError(f"dalle-mini checkpoint has no parameter {src!r}")
                    shape = next(p.shape for p in parts if p is not None)
                    fill = np.ones if param == "scale" else np.zeros
                    arr = np.stack([fill(shape, stored) if p is None else p for p in parts])
                if param == "head_scale":
                    arr = arr.reshape(arr.shape[0], -1)
                ours[key] = arr
            if our_module == "output_norm" and not leaves:
                # Swin v2 with <= 6 layers: dalle-mini never creates the extra norm; ours exists, switched off.
                ours[f"{base}/layers/layer/output_norm/scale"] = np.ones((n, cfg.d_model), stored)
                if cfg.ln_type == "layernorm":
                    ours[f"{base}/layers/layer/output_norm/bias"] = np.zeros((n, cfg.d_model), stored)
    ours["dalle_bart/lm_head/kernel"] = take("lm_head/kernel")

    unused = sorted(set(flat) - used)
    if unused:
        raise ConversionError("dalle-mini parameters with no counterpart (an unsupported switch?):\n  "
                              + "\n  ".join(unused))
    want = _target_keys(target)
    missing = sorted(set(want) - set(ours))
    extra = sorted(set(ours) - set(want))

    def source(key: str) -> str:
        for prefix, src in origin.items():
            if key.startswith(prefix) or key.startswith(prefix.rstrip("/") + "/"):
                return f" (from dalle-mini's {src})"
        return ""

    if missing or extra:
        raise ConversionError("converted parameters do not match the model:\n  "
                              + "\n  ".join([f"missing {k}{source(k)}" for k in missing]
                                             + [f"unexpected {k}" for k in extra]))
    bad = [f"{k}: {ours[k].shape} != {want[k]}" for k in want if tuple(ours[k].shape) != tuple(want[k])]
    if bad:
        raise ConversionError("converted parameter shapes differ from the model:\n  " + "\n  ".join(bad))
    tree: dict[str, dict[str, np.ndarray]] = {}
    for k, v in ours.items():
        module, _, param = k.rpartition("/")
        tree.setdefault(module, {})[param] = v
    return tree


def _target_keys(target: Mapping[str, Any]) -> dict[str, tuple]:
    return {f"{m}/{p}": tuple(np.shape(v)) for m, d in target.items() for p, v in d.items()}


def _stored_dtype(flat: Mapping[str, np.ndarray]) -> np.dtype:
    """The precision most of the checkpoint's floats are stored in (float32 when it has none)."""
    name = precision.name_of(dict(flat))
    return np.dtype(precision.jnp_dtype(name or "float32"))


def convert(config_json: Mapping[str, Any], flat_params: Mapping[str, np.ndarray],
            dtype: str | None = None) -> tuple[ConfigDict, dict]:
    """(our model config, our params) from a dalle-mini config dict and its flat params; the params keep their
    stored precision unless `dtype` (float32 | bfloat16 | float16) is given."""
    import jax

    from dalle.modeling import model as model_lib

    if dtype is not None:
        precision.check(dtype, "--dtype")
    cfg = model_config_from_dalle_mini(config_json)
    model = model_lib.build_model(cfg)
    target = jax.eval_shape(model.init, jax.random.PRNGKey(0))
    params = convert_params(flat_params, cfg, target)
    return cfg, (precision.cast(params, dtype) if dtype else params)


FLAX_WEIGHTS = weights_files.FLAX_WEIGHTS


def is_dalle_mini_dir(directory: str) -> bool:
    """Whether `directory` holds dalle-mini weights as published (config.json of a DalleBart + flax weights), as
    opposed to a dalle model directory, whose config.json has a `config` entry. Never raises."""
    doc = weights_files.flax_checkpoint_config(directory)
    return (doc is not None and "config" not in doc
            and (doc.get("model_type") == "dallebart" or all(k in doc for k in ("d_model", "encoder_layers"))))


def read_dalle_mini_dir(directory: str, weights: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json contents, flat params) of a dalle-mini directory; `weights=False` reads the config alone
    (cheap: the weights of dalle-mega are 10 GB) and returns {} for the params."""
    cfg_path = os.path.join(directory, "config.json")
    msgpack = os.path.join(directory, FLAX_WEIGHTS)
    for p in (cfg_path, msgpack):
        if not os.path.isfile(p):
            raise ConversionError(f"{directory!r} is not a dalle-mini checkpoint: {os.path.basename(p)} is missing")
    with open(cfg_path) as f:
        config_json = json.load(f)
    if not weights:
        return config_json, {}
    from flax import serialization

    with open(msgpack, "rb") as f:
        tree = serialization.msgpack_restore(f.read())
    return config_json, _flatten(tree)


# The last is dalle-mini's hashtag word list (its TextNormalizer downloads it from the dalle-mini/dalle-mini repo):
# copied with the tokenizer when the source has it, and read from the tokenizer directory (dalle.data.text).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "enwiki-words-frequency.txt")


def tokenizer_files(directory: str) -> tuple[str, ...]:
    """The BART tokenizer files in `directory`; () unless it has tokenizer.json or vocab.json + merges.txt."""
    present = tuple(f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(directory, f)))
    usable = "tokenizer.json" in present or {"vocab.json", "merges.txt"} <= set(present)
    return present if usable else ()


# --------------------------------------------------------------------------------------------------------------
# The VQGAN next to the weights
# --------------------------------------------------------------------------------------------------------------
def _subfolders(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if os.path.isdir(os.path.join(directory, n))]


def vqgan_search_places(src: str) -> list[tuple[str, list[str]]]:
    """Where a VQGAN is looked for when --vqgan is not given, nearest first: (description, folders)."""
    src = os.path.abspath(src)
    parent = os.path.dirname(src)
    return [(f"the subfolders of {src}", _subfolders(src)),
            (f"the folders beside it in {parent}", [d for d in _subfolders(parent) if d != src])]


def _vqgan_misfit(path: str, model_cfg: ConfigDict) -> str | None:
    """Why the VQGAN in `path` (vqgan-jax or dalle model dir) cannot draw this model's codes; None when it can
    (or when it is an image tokenizer of another kind, which generation checks itself)."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.vqgan import convert as vqgan_convert
    from dalle.modeling.vqgan import model as vqgan_lib

    if vqgan_convert.is_vqgan_jax_dir(path):
        arch: Mapping[str, Any] = vqgan_convert.config_from_vqgan_jax(os.path.join(path, "config.json"))
    else:
        config = checkpoint.config_of(path)
        if config.model.get("kind") != "vqgan":
            return None
        arch = config
    cfg = vqgan_lib.VQGANConfig.from_config(arch)
    problems = []
    if cfg.n_embed != model_cfg.image_vocab_size:
        problems.append(f"{cfg.n_embed} codes, the model draws {model_cfg.image_vocab_size}")
    if cfg.token_grid ** 2 != model_cfg.image_length:
        problems.append(f"a {cfg.token_grid}x{cfg.token_grid} token grid, the model draws {model_cfg.image_length} "
                        f"tokens")
    return f"{path} has " + " and ".join(problems) if problems else None


def _is_image_tokenizer_dir(path: str) -> bool:
    """A dalle model directory (or trainer workdir) whose model is an image tokenizer (`dalle convert vqgan`)."""
    from dalle import model_dir as checkpoint
    from dalle import registry

    try:
        config = checkpoint.config_of(path)
    except (checkpoint.CheckpointError, OSError, ValueError):
        return False
    return "model" in config and config.model.get("kind") in registry.IMAGE_TOKENIZERS


def find_vqgan(src: str, model_cfg: ConfigDict, given: str = "") -> str:
    """The VQGAN to decode the codes of the dalle-mini model in `src`: `given` (--vqgan), else the one vqgan-jax
    checkpoint that fits among `vqgan_search_places(src)`, nearest place first. ConversionError (one line, saying
    what to pass) when there is none, or several at the nearest place."""
    from dalle.modeling.vqgan import convert as vqgan_convert

    if given:
        if not os.path.exists(given):
            raise ConversionError(f"--vqgan {given!r} does not exist")
        if not vqgan_convert.is_vqgan_jax_dir(given) and not _is_image_tokenizer_dir(given):
            raise ConversionError(f"--vqgan {given!r} is neither a vqgan-jax checkpoint (config.json + "
                                  f"{FLAX_WEIGHTS}) nor a converted VQGAN model directory (`dalle convert vqgan`)")
        misfit = _vqgan_misfit(given, model_cfg)
        if misfit:
            raise ConversionError(f"--vqgan {given!r} does not fit this model: {misfit}")
        return given
    misfits = []
    for _, folders in vqgan_search_places(src):
        found = [d for d in folders if vqgan_convert.is_vqgan_jax_dir(d)]
        fits = []
        for d in found:
            misfit = _vqgan_misfit(d, model_cfg)
            if misfit:
                misfits.append(misfit)
            else:
                fits.append(d)
        if len(fits) > 1:
            raise ConversionError(f"several VQGANs next to {src} fit this model ({', '.join(fits)}): pass "
                                  f"--vqgan DIR to choose one")
        if fits:
            return fits[0]
    where = " and ".join(description for description, _ in vqgan_search_places(src))
    if misfits:
        raise ConversionError(f"no VQGAN next to {src} fits this model ({'; '.join(misfits)}): pass --vqgan DIR "
                              f"(a vqgan-jax checkpoint or a `dalle convert vqgan` output)")
    raise ConversionError(f"no VQGAN found in {where} (a folder with config.json + {FLAX_WEIGHTS} of vqgan-jax): "
                          f"pass --vqgan DIR (e.g. dalle-mini's vqgan_imagenet_f16_16384, or a `dalle convert vqgan` "
                          f"output), or --weights-only to convert the transformer alone")


# --------------------------------------------------------------------------------------------------------------
# The whole directory
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Converted:
    """A dalle-mini directory converted in memory: `config` ({model, data}) builds `params`; its data paths point
    at the source (the tokenizer: the source directory itself; the VQGAN: where it was found)."""

    config: ConfigDict
    params: dict
    source: str  # absolute path of the dalle-mini directory
    vqgan: str  # absolute path of the VQGAN (vqgan-jax or dalle model dir); "" when converted without one
    tokenizer_files: tuple[str, ...]  # names of the BART tokenizer files in `source`; () when it has none

    def num_params(self) -> int:
        return sum(int(np.prod(v.shape)) for d in self.params.values() for v in d.values())


LOAD_STAGES = ("find tokenizer + VQGAN", "read weights", "convert")
WRITE_STAGES = ("copy tokenizer", "convert VQGAN", "write params")


def load(src: str, vqgan: str = "", dtype: str | None = None, weights_only: bool = False,
         stages: Stages | None = None) -> Converted:
    """Converts the dalle-mini directory `src` in memory (see the module docstring for where the VQGAN comes
    from). `weights_only`: neither a tokenizer nor a VQGAN is required (a `vqgan` given is still used).
    `stages`: a progress bar that has LOAD_STAGES among its stages."""
    stages = stages or Stages("", LOAD_STAGES, enabled=False)
    if not os.path.isdir(src):
        raise ConversionError(f"--from {src!r} is not a directory (dalle-mini's config.json + {FLAX_WEIGHTS})")
    if dtype is not None:
        precision.check(dtype, "--dtype")
    stages.start("find tokenizer + VQGAN")
    config_json, _ = read_dalle_mini_dir(src, weights=False)
    # Every missing piece is reported before the weights are read (minutes for dalle-mega).
    tokenizer = tokenizer_files(src)
    if not tokenizer and not weights_only:
        raise ConversionError(f"{src!r} has no tokenizer (tokenizer.json, or vocab.json + merges.txt): copy "
                              f"dalle-mini's tokenizer files there, or pass --weights-only")
    vq = find_vqgan(src, model_config_from_dalle_mini(config_json), vqgan) if (vqgan or not weights_only) else ""
    stages.start("read weights")
    flat = read_dalle_mini_dir(src)[1]
    stages.start("convert")
    model_cfg, params = convert(config_json, flat, dtype)
    del flat
    # dalle-mini's processor runs its TextNormalizer when normalize_text is true, else tokenizes the raw prompt.
    # (ascii_fold stays as the exporter's record of normalize_text.)
    normalize = bool(config_json.get("normalize_text", False))
    data = ConfigDict({"max_text_length": model_cfg.max_text_length, "lowercase": True, "ascii_fold": normalize,
                       "text_normalizer": "dalle_mini" if normalize else "none",
                       "tokenizer_path": os.path.abspath(src) if tokenizer else "",
                       "vqgan_checkpoint": os.path.abspath(vq) if vq else ""})
    return Converted(ConfigDict({"model": model_cfg, "data": data}), params, os.path.abspath(src),
                     os.path.abspath(vq) if vq else "", tokenizer)


TOKENIZER_DIR = "tokenizer"  # OUT/tokenizer: dalle-mini's tokenizer files
VQGAN_DIR = "vqgan"  # OUT/vqgan: the vqgan-jax VQGAN, converted


def write(converted: Converted, out: str, stages: Stages | None = None) -> str:
    """Writes a converted dalle-mini model to the directory `out`, with its tokenizer and (vqgan-jax) VQGAN inside
    it, recorded as paths relative to `out`. Returns a one-line summary of what was written. `stages`: a progress
    bar that has WRITE_STAGES among its stages."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.vqgan import convert as vqgan_convert

    stages = stages or Stages("", WRITE_STAGES, enabled=False)
    stages.start("copy tokenizer")
    config = ConfigDict(converted.config.to_dict())
    notes = []
    if converted.tokenizer_files:
        tok_dir = os.path.join(out, TOKENIZER_DIR)
        os.makedirs(tok_dir, exist_ok=True)
        for f in converted.tokenizer_files:
            shutil.copy(os.path.join(converted.source, f), tok_dir)
        config.data.tokenizer_path = TOKENIZER_DIR
    else:
        notes.append("no tokenizer")
    extra = {"converted_from": converted.source, "source": "dalle-mini"}
    if converted.vqgan and vqgan_convert.is_vqgan_jax_dir(converted.vqgan):
        stages.start("convert VQGAN")
        summary = vqgan_convert.write_converted(converted.vqgan, os.path.join(out, VQGAN_DIR))
        config.data.vqgan_checkpoint = VQGAN_DIR
        extra["vqgan_converted_from"] = converted.vqgan
        notes.append(f"{VQGAN_DIR}/: {summary} from {converted.vqgan}")
    elif converted.vqgan:
        notes.append(f"VQGAN {converted.vqgan}")
    else:
        notes.append("no VQGAN")
    stages.start("write params")
    checkpoint.save_model(out, converted.params, config, extra=extra)
    dtype = precision.name_of(converted.params) or "float32"
    return f"dalle_bart, {converted.num_params():,} {dtype} parameters; " + "; ".join(notes)


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle convert dalle-mini", description=__doc__.split("\n\n")[0],
                    examples="dalle convert dalle-mini --from downloads/dalle-mini --out weights/dalle_mini\n"
                             "dalle convert dalle-mini --from mega --vqgan vqgan_imagenet_f16_16384 --out "
                             "weights/mega --dtype bfloat16")
    parser.add_argument("--from", dest="src", required=True,
                        help="dalle-mini directory: config.json, flax_model.msgpack and the tokenizer files")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--vqgan", default="",
                        help="the VQGAN: a vqgan-jax checkpoint dir (converted into OUT/vqgan) or a `dalle convert "
                             "vqgan` output (recorded); default: the vqgan-jax checkpoint in a subfolder of --from "
                             "or beside it")
    parser.add_argument("--dtype", choices=precision.DTYPES, default=None,
                        help="precision of the converted weights (default: the precision they are stored in)")
    parser.add_argument("--weights-only", action="store_true",
                        help="convert the transformer alone (for model.init_from): no tokenizer or VQGAN required")
    args = parser.parse_args(list(argv))
    try:
        with Stages("dalle convert dalle-mini", LOAD_STAGES + WRITE_STAGES) as stages:
            converted = load(args.src, args.vqgan, args.dtype, args.weights_only, stages)
            summary = write(converted, args.out, stages)
    except ConversionError as e:
        print(f"dalle convert dalle-mini: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {summary}")
    return 0
