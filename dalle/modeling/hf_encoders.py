"""Pretrained text encoders from Hugging Face directories: `model.encoder_init = DIR` where DIR holds a BART, BERT
or RoBERTa model as `save_pretrained` writes it (config.json and flax_model.msgpack, or model.safetensors when the
`safetensors` package is installed). Its encoder's params become our DalleBart text encoder's; the run's `model`
section must describe that encoder (`model_overrides(DIR)` gives the keys, `python -m dalle.modeling.hf_encoders
DIR` prints them as overrides).

All three are post-LN transformers with biases and a plain (non-GLU) MLP, which our encoder holds exactly with
`encoder_ln_positions="postln"`, `encoder_use_bias=True`, `encoder_use_glu=False` (a decoder of any other kind
stays as it is). What differs, and where it goes:
  * BART: token embedding (`shared`), learned positions whose first two rows are never used (offset 2),
    `layernorm_embedding`, LayerNorm eps 1e-5, optional sqrt(d) embedding scale (`scale_embedding`);
  * BERT: word + position + token-type embeddings then LayerNorm (eps 1e-12, `encoder_layer_norm_eps`); every
    caption token is type 0 (`encoder_token_types` keeps BERT's table, row 0 is added);
  * RoBERTa: BERT's layout, positions counted from `pad_token_id + 1` (its offset).
Position tables are cut to `max_text_length` rows from the offset on (right-padded captions are what the data
pipeline makes, so the i-th token has position i + offset, as RoBERTa computes it; only padding positions, whose
outputs every key mask drops, see other rows). Our text pad id is 0: where the source's pad id is not, rows 0 and
pad are swapped in the token table (BART / RoBERTa: <s> = 0, <pad> = 1, as dalle.tokenizers.bart_bpe swaps ids;
a BERT vocabulary whose [PAD] is not 0 is swapped the same way by dalle.tokenizers.wordpiece). The directory itself
is the run's `data.tokenizer_path`: its tokenizer files are read by those two modules.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import numpy as np

from dalle import weights_files
from dalle.modeling import param_check

ConversionError = weights_files.ConversionError

KINDS = ("bart", "bert", "roberta")
SAFETENSORS = "model.safetensors"
ENCODER = "dalle_bart/encoder"

# HF activation names -> ours (the Flax ACT2FN meaning: "gelu" is the exact erf GELU).
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "swish", "swish": "swish"}

# Per-layer modules: source path inside layer i -> our path inside the (stacked) `layer`.
_BART_LAYER = {"self_attn/q_proj": "self_attn/q_proj", "self_attn/k_proj": "self_attn/k_proj",
               "self_attn/v_proj": "self_attn/v_proj", "self_attn/out_proj": "self_attn/out_proj",
               "self_attn_layer_norm": "self_attn_residual_norm", "fc1": "ffn/wi_0", "fc2": "ffn/wo",
               "final_layer_norm": "output_norm"}
_BERT_LAYER = {"attention/self/query": "self_attn/q_proj", "attention/self/key": "self_attn/k_proj",
               "attention/self/value": "self_attn/v_proj", "attention/output/dense": "self_attn/out_proj",
               "attention/output/LayerNorm": "self_attn_residual_norm", "intermediate/dense": "ffn/wi_0",
               "output/dense": "ffn/wo", "output/LayerNorm": "output_norm"}


# --------------------------------------------------------------------------------------------------------------
# Reading a directory
# --------------------------------------------------------------------------------------------------------------
def read_config(directory: str) -> dict | None:
    """DIR/config.json when DIR is a Hugging Face BART / BERT / RoBERTa directory (not a dalle model directory,
    whose config.json has a `config` entry) with a weights file; else None. Never raises."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or "config" in doc or doc.get("model_type") not in KINDS:
        return None
    if not any(os.path.isfile(os.path.join(directory, f)) for f in (weights_files.FLAX_WEIGHTS, SAFETENSORS)):
        return None
    return doc


def is_hf_encoder_dir(directory: str) -> bool:
    return read_config(directory) is not None


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


# Registered buffers PyTorch BERT / RoBERTa save beside the weights (`embeddings.position_ids`, persistent until
# transformers 4.31): index tables, not params, which the msgpack never has.
_TORCH_BUFFERS = ("position_ids", "token_type_ids")


def torch_to_flax_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A PyTorch-named state dict (`encoder.layer.0.attention.self.query.weight`, [out, in] Linear weights) ->
    the Flax names and layouts `save_pretrained` writes to msgpack (`.../query/kernel`, [in, out]); buffers are
    dropped."""
    out = {}
    for name, value in state.items():
        module, _, leaf = name.rpartition(".")
        if leaf in _TORCH_BUFFERS:
            continue
        last = module.rpartition(".")[2]
        path = module.replace(".", "/")
        value = np.asarray(value)
        if leaf in ("gamma", "beta"):  # old BERT checkpoints name LayerNorm params like TF
            leaf = "scale" if leaf == "gamma" else "bias"
        elif leaf == "weight":
            if "norm" in last.lower():  # before "embed": BART's layernorm_embedding is a norm
                leaf = "scale"
            elif "embed" in last or last == "shared":
                leaf = "embedding"
            else:
                leaf, value = "kernel", value.T
        out[f"{path}/{leaf}"] = value
    return out


def read_weights(directory: str) -> dict[str, np.ndarray]:
    """Flat Flax-named params of DIR: flax_model.msgpack, else model.safetensors (renamed from PyTorch's names)."""
    msgpack = os.path.join(directory, weights_files.FLAX_WEIGHTS)
    if os.path.isfile(msgpack):
        from flax import serialization

        with open(msgpack, "rb") as f:
            return _flatten(serialization.msgpack_restore(f.read()))
    path = os.path.join(directory, SAFETENSORS)
    return torch_to_flax_names(weights_files.load_state_dict(path, flag="model.encoder_init"))


# --------------------------------------------------------------------------------------------------------------
# The model section an encoder needs
# --------------------------------------------------------------------------------------------------------------
def _kind(hf: Mapping[str, Any]) -> str:
    kind = hf.get("model_type")
    if kind not in KINDS:
        raise ConversionError(f"model_type {kind!r} is not one of {KINDS}")
    return kind


# transformers' pad_token_id when a config.json leaves it out (BartConfig / RobertaConfig 1, BertConfig 0).
DEFAULT_PAD_ID = {"bart": 1, "roberta": 1, "bert": 0}


def pad_id(hf: Mapping[str, Any]) -> int:
    """The source's pad token id: its config.json's, else transformers' default for its kind."""
    value = hf.get("pad_token_id")
    return DEFAULT_PAD_ID[_kind(hf)] if value is None else int(value)


def position_offset(hf: Mapping[str, Any]) -> int:
    """The first position row a caption's first token uses: BART 2, RoBERTa pad_token_id + 1, BERT 0."""
    kind = _kind(hf)
    if kind == "bart":
        return 2
    if kind == "roberta":
        return pad_id(hf) + 1
    return 0


def max_text_length(hf: Mapping[str, Any]) -> int:
    """The longest caption the source's position table holds."""
    rows = int(hf["max_position_embeddings"]) + (2 if _kind(hf) == "bart" else 0)  # BART's table has 2 extra
    return rows - position_offset(hf)


def model_overrides(hf: Mapping[str, Any] | str) -> dict[str, Any]:
    """The `model` keys (kind dalle_bart) whose values the encoder of `hf` (a config.json dict or its directory)
    needs; `max_text_length` must in addition be at most `max_text_length(hf)`. ConversionError for what our
    encoder cannot hold."""
    if isinstance(hf, str):
        doc = read_config(hf)
        if doc is None:
            raise ConversionError(f"{hf!r} is not a Hugging Face {'/'.join(KINDS)} directory (config.json with "
                                  f"that model_type, and {weights_files.FLAX_WEIGHTS} or {SAFETENSORS})")
        hf = doc
    kind = _kind(hf)
    bart = kind == "bart"
    act_key = "activation_function" if bart else "hidden_act"
    act = _ACTIVATIONS.get(hf.get(act_key, "gelu"))
    refused = []
    if act is None:
        refused.append(f"{act_key}={hf.get(act_key)!r} (known: {sorted(_ACTIVATIONS)})")
    if not bart and hf.get("position_embedding_type", "absolute") != "absolute":
        refused.append(f"position_embedding_type={hf['position_embedding_type']!r} (only absolute positions)")
    if refused:
        raise ConversionError(f"this {kind} encoder cannot be held: " + "; ".join(refused))
    if bart:
        sizes = dict(d_model=hf["d_model"], encoder_layers=hf["encoder_layers"],
                     encoder_attention_heads=hf["encoder_attention_heads"], encoder_ffn_dim=hf["encoder_ffn_dim"])
    else:
        sizes = dict(d_model=hf["hidden_size"], encoder_layers=hf["num_hidden_layers"],
                     encoder_attention_heads=hf["num_attention_heads"], encoder_ffn_dim=hf["intermediate_size"])
    return {
        **{k: int(v) for k, v in sizes.items()},
        "encoder_vocab_size": int(hf["vocab_size"]),
        "encoder_ln_positions": "postln", "encoder_use_bias": True, "encoder_use_glu": False,
        "encoder_activation_function": act,
        "encoder_layer_norm_eps": 1e-5 if bart else float(hf.get("layer_norm_eps", 1e-12)),
        "encoder_token_types": 0 if bart else int(hf.get("type_vocab_size", 2)),
        "scale_embedding": bool(hf.get("scale_embedding", False)) if bart else False,
        # Shared with the decoder, but each changes the encoder's function too.
        "ln_type": "layernorm", "use_absolute_position_embeddings": True, "use_head_scale": False,
        "use_cosine_attention": False, "use_swin_position_embeddings": False, "use_deepnet_scaling": False,
        "sinkhorn_iters": 1,
    }


def _effective(m: Mapping[str, Any], key: str) -> Any:
    """The value the encoder uses for `key` (an `encoder_<switch>` set to None means the shared switch)."""
    value = m.get(key)
    if value is None and key.startswith("encoder_") and key[len("encoder_"):] in m:
        return m.get(key[len("encoder_"):])
    return value


def model_section_problems(m: Mapping[str, Any], hf: Mapping[str, Any]) -> list[str]:
    """'set model.k = v (now w)' for each key of the run's `model` section `m` that does not describe the encoder
    of `hf`, and a line for a too long max_text_length; [] when it fits."""
    if m.get("kind") != "dalle_bart":
        return [f"set model.kind = 'dalle_bart' (now {m.get('kind')!r}: only DalleBart has a text encoder)"]
    lines = []
    for key, want in model_overrides(hf).items():
        have = _effective(m, key)
        if isinstance(want, float) and isinstance(have, (int, float)) and not isinstance(have, bool):
            same = np.isclose(float(have), want, rtol=1e-6, atol=0.0)
        else:
            same = have == want and type(have) is type(want)
        if not same:
            lines.append(f"set model.{key} = {want!r} (now {m.get(key)!r})")
    limit = max_text_length(hf)
    if m.get("max_text_length", 0) > limit:
        lines.append(f"set model.max_text_length <= {limit} (now {m.get('max_text_length')}: the source's "
                     f"position table has no more rows)")
    return lines


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------
def _base_prefix(flat: Mapping[str, np.ndarray], kind: str) -> str:
    """Where the bare model sits in the file: "" (FlaxBartModel, FlaxBertModel), "model/" (BART with an LM head),
    "bert/" / "roberta/" (BERT / RoBERTa with a head)."""
    inner = "encoder/layers/" if kind == "bart" else "encoder/layer/"
    for prefix in ("", "model/", f"{kind}/"):
        if any(k.startswith(prefix + inner) for k in flat):
            return prefix
    raise ConversionError(f"no {kind} encoder layers ({inner}...) in the weights")


def convert_params(flat: Mapping[str, np.ndarray], hf: Mapping[str, Any], text_length: int,
                   ) -> dict[str, np.ndarray]:
    """Flat Flax-named HF params -> our flat encoder params (`dalle_bart/encoder/...`, layers stacked as
    `layers/layer/...` [num_layers, ...]), position tables cut to `text_length` rows from the offset. Raises
    listing every encoder param of the source that has no counterpart here."""
    kind = _kind(hf)
    base = _base_prefix(flat, kind)
    src = {k[len(base):]: v for k, v in flat.items() if k.startswith(base)}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in src:
            raise ConversionError(f"the {kind} weights have no {base}{key}")
        used.add(key)
        return np.asarray(src[key])

    out: dict[str, np.ndarray] = {}
    if kind == "bart":
        tokens = "encoder/embed_tokens/embedding" if "encoder/embed_tokens/embedding" in src else "shared/embedding"
        emb = {"tokens": take(tokens), "positions": take("encoder/embed_positions/embedding")}
        norm, layer_root, layer_map = "encoder/layernorm_embedding", "encoder/layers", _BART_LAYER
        owned: tuple[str, ...] = ("encoder/",)
        n = int(hf["encoder_layers"])
    else:
        emb = {"tokens": take("embeddings/word_embeddings/embedding"),
               "positions": take("embeddings/position_embeddings/embedding")}
        if "embeddings/token_type_embeddings/embedding" in src:
            out[f"{ENCODER}/embed_token_types/embedding"] = take("embeddings/token_type_embeddings/embedding")
        norm, layer_root, layer_map = "embeddings/LayerNorm", "encoder/layer", _BERT_LAYER
        owned = ("embeddings/", "encoder/")
        n = int(hf["num_hidden_layers"])
    tokens = emb["tokens"].copy()
    pad = pad_id(hf)
    if pad:  # our pad id is 0
        tokens[[0, pad]] = tokens[[pad, 0]]
    out[f"{ENCODER}/embed_tokens/embedding"] = tokens
    offset = position_offset(hf)
    out[f"{ENCODER}/embed_positions/embedding"] = emb["positions"][offset:offset + text_length]
    for leaf in ("scale", "bias"):
        out[f"{ENCODER}/layernorm_embedding/{leaf}"] = take(f"{norm}/{leaf}")
    for theirs, ours in layer_map.items():
        leaves = sorted({k.rpartition("/")[2] for k in src if k.startswith(f"{layer_root}/0/{theirs}/")})
        for leaf in leaves:
            out[f"{ENCODER}/layers/layer/{ours}/{leaf}"] = np.stack(
                [take(f"{layer_root}/{i}/{theirs}/{leaf}") for i in range(n)])
    # Everything of the encoder must have gone somewhere (the BART decoder, poolers and heads are not ours).
    unused = sorted(k for k in src if k.startswith(owned) and k not in used)
    if unused:
        raise ConversionError(f"{kind} encoder params with no counterpart here:\n  " + "\n  ".join(unused))
    return out


def unstack(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stacked `layers/layer/...` -> per-layer `layers/layer_i/layer/...` (an unscanned model's names)."""
    out = {}
    for k, v in params.items():
        if "/layers/layer/" in k:
            for i in range(v.shape[0]):
                out[k.replace("/layers/layer/", f"/layers/layer_{i}/layer/")] = v[i]
        else:
            out[k] = v
    return out


def load_encoder(directory: str, model: Mapping[str, Any], target: Mapping[str, tuple[int, ...]],
                 key: str = "model.encoder_init") -> dict[str, np.ndarray]:
    """Our encoder params {flat name: array} from the HF directory, for the run's `model` section and `target`
    ({flat name: shape} of the encoder params the run's model has). One ConversionError lists the model keys to
    set and every param that is missing, unexpected or shaped otherwise."""
    hf = read_config(directory)
    if hf is None:
        raise ConversionError(f"{key} = {directory!r} is not a Hugging Face {'/'.join(KINDS)} directory")
    problems = model_section_problems(model, hf)
    params = convert_params(read_weights(directory), hf, int(model.get("max_text_length", 0)))
    if not any("/layers/layer/" in k for k in target):
        params = unstack(params)
    mismatch = param_check.mismatch_lines(dict(target), {k: tuple(v.shape) for k, v in params.items()},
                                          noun="params")
    if problems or mismatch:
        raise ConversionError(
            f"{key} = {directory!r} (a Hugging Face {hf['model_type']} encoder) does not fit this model:\n  "
            + "\n  ".join(problems + mismatch))
    return params


def main(argv: list[str]) -> int:
    """`python -m dalle.modeling.hf_encoders DIR`: the --config.model.* overrides a run needs for DIR."""
    if len(argv) != 1:
        print("usage: python -m dalle.modeling.hf_encoders HF_DIR", file=sys.stderr)
        return 2
    try:
        keys = model_overrides(argv[0])
        hf = read_config(argv[0]) or {}
    except ConversionError as e:
        print(f"hf_encoders: {e}", file=sys.stderr)
        return 2
    print(" ".join([f"--config.model.{k}={v}" for k, v in keys.items()]
                   + [f"--config.model.encoder_init={argv[0]}"]))
    print(f"# and model.max_text_length <= {max_text_length(hf)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
