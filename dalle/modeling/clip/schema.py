"""Schema of the `model` section of kind "clip": the CLIP architecture (dalle/modeling/clip/model.py), its tokenizer
and its preprocessing. Registered as a model kind by dalle/kinds/clip.py.

Light on purpose: no jax import (validation must stay cheap).
"""

from __future__ import annotations

import math

from ml_collections import ConfigDict

CLIP_ACTIVATIONS = ("quick_gelu", "gelu")
CLIP_POOLS = ("argmax", "eos")
CLIP_TOKENIZERS = ("sentencepiece", "openai_bpe")


def clip_defaults() -> ConfigDict:
    """OpenAI ViT-B/32 (the backbone dalle-mini reranks with)."""
    c = ConfigDict()
    c.kind = "clip"
    c.embed_dim = 512
    c.image_size = 224
    c.patch_size = 32
    c.vision_width = 768
    c.vision_layers = 12
    c.vision_heads = 12
    c.vision_mlp_dim = 3072
    c.context_length = 77
    c.vocab_size = 49408
    c.text_width = 512
    c.text_layers = 12
    c.text_heads = 8
    c.text_mlp_dim = 2048
    c.activation = "quick_gelu"
    c.text_pool = "argmax"  # argmax (OpenAI BPE: EOT is the largest id) | eos (first eos_id; our sentencepiece)
    c.eos_id = -1  # -1 with text_pool "eos" and the sentencepiece tokenizer: the vocabulary's EOS id
    c.ln_eps = 1e-5
    c.init_logit_scale = math.log(1 / 0.07)
    c.image_mean = (0.48145466, 0.4578275, 0.40821073)
    c.image_std = (0.26862954, 0.26130258, 0.27577711)
    c.tokenizer = "sentencepiece"  # sentencepiece (this project's, data.tokenizer_path) | openai_bpe
    c.tokenizer_path = ""  # "" = data.tokenizer_path (sentencepiece); openai_bpe: bpe_simple_vocab_16e6.txt.gz
    c.name = ""  # backbone name reported next to every CLIP-based number ("" = derived from the architecture)
    return c


def check_clip(m: ConfigDict, config: ConfigDict):
    for key in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
                "vision_mlp_dim", "context_length", "vocab_size", "text_width", "text_layers", "text_heads",
                "text_mlp_dim"):
        if m[key] <= 0:
            yield f"model.{key} = {m[key]} must be positive"
    if m.patch_size > 0 and m.image_size % m.patch_size:
        yield f"model.image_size = {m.image_size} is not divisible by model.patch_size = {m.patch_size}"
    for tower in ("vision", "text"):
        w, h = m[f"{tower}_width"], m[f"{tower}_heads"]
        if h > 0 and w % h:
            yield f"model.{tower}_width = {w} is not divisible by model.{tower}_heads = {h}"
    if m.activation not in CLIP_ACTIVATIONS:
        yield f"model.activation = {m.activation!r} is not one of {CLIP_ACTIVATIONS}"
    if m.text_pool not in CLIP_POOLS:
        yield f"model.text_pool = {m.text_pool!r} is not one of {CLIP_POOLS}"
    if m.tokenizer not in CLIP_TOKENIZERS:
        yield f"model.tokenizer = {m.tokenizer!r} is not one of {CLIP_TOKENIZERS}"
    if m.text_pool == "eos" and m.eos_id < 0 and m.tokenizer != "sentencepiece":
        yield "model.text_pool = 'eos' needs model.eos_id >= 0 (only the sentencepiece tokenizer supplies it)"
    if m.tokenizer == "sentencepiece" and m.text_pool == "argmax":
        yield ("model.text_pool = 'argmax' pools at the largest token id, which is OpenAI BPE's EOT; with the "
               "sentencepiece tokenizer (EOS = 1) use text_pool = 'eos'")
    if len(m.image_mean) != 3 or len(m.image_std) != 3 or min(m.image_std) <= 0:
        yield f"model.image_mean {m.image_mean} / image_std {m.image_std} must be 3 values, std > 0"
    data = config.get("data") if isinstance(config, ConfigDict) else None
    if data is not None and m.tokenizer == "sentencepiece" and "max_text_length" in data:
        if m.context_length != data.max_text_length:
            yield (f"model.context_length = {m.context_length} must equal data.max_text_length = "
                   f"{data.max_text_length} (captions are tokenized to that length)")
        if "vocab_size" in data and m.vocab_size < data.vocab_size:
            yield f"model.vocab_size = {m.vocab_size} is smaller than data.vocab_size = {data.vocab_size}"


def complete_clip_config(model: ConfigDict) -> ConfigDict:
    """Fills defaults into a partial `model` section of kind clip (converters, checkpoints); raises on errors."""
    out = clip_defaults()
    for key in model.keys():
        if key not in out:
            raise ValueError(f"unknown key 'model.{key}' for model.kind 'clip'")
        value = model[key]
        with out.ignore_type():
            out[key] = tuple(value) if isinstance(value, list) else value
    errors = list(check_clip(out, ConfigDict()))
    if errors:
        raise ValueError("invalid CLIP config:\n  " + "\n  ".join(errors))
    return out


def backbone_name(m: ConfigDict) -> str:
    """`model.name`, else e.g. "CLIP-ViT-224/32-w768x12": every CLIP-based number is reported with it."""
    if m.get("name"):
        return str(m.name)
    return f"CLIP-ViT-{m.image_size}/{m.patch_size}-w{m.vision_width}x{m.vision_layers}-d{m.embed_dim}"
