"""`dalle convert clip --from SRC --out DIR`: an OpenAI CLIP or open_clip ViT state dict -> a dalle CLIP checkpoint.

Sources: OpenAI's released TorchScript archives (`ViT-B-32.pt`, only with `--allow_torchscript`: loading one runs
code from the file), open_clip
checkpoints (`open_clip_pytorch_model.bin`, training checkpoints with a `state_dict` entry and `module.`
prefixes), a `.safetensors` file, or an `.npz` of `<torch key>` arrays (the test fixtures). The architecture is
read from tensor shapes (as OpenAI's `build_model` does); what shapes cannot tell is a flag: the number of heads
(default width / 64, OpenAI's rule) and the MLP activation (OpenAI archives use QuickGELU; open_clip models
without `-quickgelu` in their name use exact GELU, so for open_clip files `--activation` must be given).

    dalle convert clip --from ViT-B-32.pt --allow_torchscript --out checkpoints/clip_vit_b32 --tokenizer_path bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import weights_files
from dalle.cli.args import Parser

OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # scalars in OpenAI's TorchScript archives
IGNORED = ("attn_mask",)  # buffers that are not weights


ConversionError = weights_files.ConversionError  # not a supported CLIP; the message names the key or shape


def load_state_dict(path: str, allow_torchscript: bool = False) -> dict[str, np.ndarray]:
    """A state dict from .pt/.pth/.bin (torch), .safetensors or .npz, read as data only (dalle.weights_files);
    OpenAI's TorchScript archives need `allow_torchscript` (loading them runs code from the file)."""
    return weights_files.load_state_dict(path, allow_torchscript=allow_torchscript)


def _strip_prefixes(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def _layers(sd: Mapping[str, np.ndarray], prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    ids = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    if ids != set(range(len(ids))):
        raise ConversionError(f"layers under {prefix!r} are not numbered 0..n-1: {sorted(ids)}")
    return len(ids)


def infer_config(sd: Mapping[str, np.ndarray], vision_heads: int | None = None, text_heads: int | None = None,
                 activation: str = "quick_gelu", text_pool: str = "argmax", eos_id: int = -1) -> ConfigDict:
    """The `model` section (kind "clip") of the network a state dict holds."""
    if "visual.conv1.weight" not in sd:
        if any(k.startswith("visual.layer1.") for k in sd):
            raise ConversionError("this is a ModifiedResNet CLIP (RN50...): only ViT image towers are supported")
        if any(k.startswith("visual.trunk.") for k in sd):
            raise ConversionError("this is an open_clip timm image tower: only OpenAI-style ViT towers are supported")
        raise ConversionError("no 'visual.conv1.weight': not an OpenAI/open_clip ViT CLIP state dict")
    for bad in ("logit_bias", "visual.attn_pool.query", "text.transformer.embeddings.word_embeddings.weight"):
        if bad in sd:
            raise ConversionError(f"key {bad!r}: SigLIP / CoCa / HF-text variants are not supported")
    w_v, _, p, _ = sd["visual.conv1.weight"].shape
    n_pos = sd["visual.positional_embedding"].shape[0]
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid + 1 != n_pos:
        raise ConversionError(f"visual.positional_embedding has {n_pos} rows, not grid^2 + 1")
    w_t = sd["ln_final.weight"].shape[0]
    m = ConfigDict()
    m.kind = "clip"
    m.embed_dim = int(sd["text_projection"].shape[1])
    m.image_size = int(p * grid)
    m.patch_size = int(p)
    m.vision_width = int(w_v)
    m.vision_layers = _layers(sd, "visual.transformer.resblocks.")
    m.vision_heads = int(vision_heads or max(1, w_v // 64))
    m.vision_mlp_dim = int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    m.context_length = int(sd["positional_embedding"].shape[0])
    m.vocab_size = int(sd["token_embedding.weight"].shape[0])
    m.text_width = int(w_t)
    m.text_layers = _layers(sd, "transformer.resblocks.")
    m.text_heads = int(text_heads or max(1, w_t // 64))
    m.text_mlp_dim = int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
    m.activation = activation
    m.text_pool = text_pool
    m.eos_id = int(eos_id)
    if sd["visual.proj"].shape != (w_v, m.embed_dim):
        raise ConversionError(f"visual.proj has shape {sd['visual.proj'].shape}, expected {(w_v, m.embed_dim)}")
    for name, heads, width in (("vision", m.vision_heads, w_v), ("text", m.text_heads, w_t)):
        if width % heads:
            raise ConversionError(f"--{name}_heads {heads} does not divide the {name} width {width}")
    return m


def _block(sd: Mapping[str, np.ndarray], src: str, dst: str, used: set[str]) -> dict[str, dict[str, np.ndarray]]:
    def get(key: str) -> np.ndarray:
        used.add(src + key)
        return np.asarray(sd[src + key], np.float32)

    return {
        f"{dst}/ln_1": {"scale": get("ln_1.weight"), "offset": get("ln_1.bias")},
        f"{dst}/attn/in_proj": {"w": get("attn.in_proj_weight").T, "b": get("attn.in_proj_bias")},
        f"{dst}/attn/out_proj": {"w": get("attn.out_proj.weight").T, "b": get("attn.out_proj.bias")},
        f"{dst}/ln_2": {"scale": get("ln_2.weight"), "offset": get("ln_2.bias")},
        f"{dst}/mlp/c_fc": {"w": get("mlp.c_fc.weight").T, "b": get("mlp.c_fc.bias")},
        f"{dst}/mlp/c_proj": {"w": get("mlp.c_proj.weight").T, "b": get("mlp.c_proj.bias")},
    }


def convert_state_dict(sd: Mapping[str, np.ndarray], model: ConfigDict) -> dict[str, dict[str, np.ndarray]]:
    """Haiku params (dalle/modeling/clip/model.py layout) from a torch-named state dict. Every weight must be used."""
    sd = _strip_prefixes(sd)
    used: set[str] = set()

    def get(key: str) -> np.ndarray:
        if key not in sd:
            raise ConversionError(f"state dict has no {key!r}")
        used.add(key)
        return np.asarray(sd[key], np.float32)

    def ln(key: str) -> dict[str, np.ndarray]:
        return {"scale": get(key + ".weight"), "offset": get(key + ".bias")}

    p: dict[str, dict[str, np.ndarray]] = {
        "visual/conv1": {"w": get("visual.conv1.weight").transpose(2, 3, 1, 0)},  # OIHW -> HWIO
        "visual": {"class_embedding": get("visual.class_embedding"),
                   "positional_embedding": get("visual.positional_embedding"), "proj": get("visual.proj")},
        "visual/ln_pre": ln("visual.ln_pre"),
        "visual/ln_post": ln("visual.ln_post"),
        "text": {"token_embedding": get("token_embedding.weight"),
                 "positional_embedding": get("positional_embedding"), "text_projection": get("text_projection")},
        "text/ln_final": ln("ln_final"),
        "~": {"logit_scale": np.asarray(get("logit_scale"), np.float32).reshape(())},
    }
    for i in range(model.vision_layers):
        p.update(_block(sd, f"visual.transformer.resblocks.{i}.", f"visual/layer_{i}", used))
    for i in range(model.text_layers):
        p.update(_block(sd, f"transformer.resblocks.{i}.", f"text/layer_{i}", used))
    left = sorted(k for k in sd if k not in used and k not in OPENAI_EXTRAS and k.split(".")[-1] not in IGNORED)
    if left:
        raise ConversionError(f"{len(left)} state-dict entries have no place in the CLIP: {left[:8]}")
    return p


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle convert clip", description=__doc__)
    parser.add_argument("--from", dest="src", required=True, help="OpenAI .pt, open_clip .bin/.pt/.safetensors, .npz")
    parser.add_argument("--out", required=True, help="output model directory (dalle.model_dir format)")
    parser.add_argument("--allow_torchscript", action="store_true",
                        help="load a TorchScript archive (OpenAI's .pt files): this EXECUTES code from the file, "
                             "so only for files you trust")
    parser.add_argument("--vision_heads", type=int, default=0, help="default: vision width / 64")
    parser.add_argument("--text_heads", type=int, default=0, help="default: text width / 64")
    parser.add_argument("--activation", choices=("auto", "quick_gelu", "gelu"), default="auto",
                        help="auto: quick_gelu for OpenAI archives; open_clip files must say")
    parser.add_argument("--text_pool", choices=("argmax", "eos"), default="argmax")
    parser.add_argument("--eos_id", type=int, default=-1)
    parser.add_argument("--tokenizer", choices=("openai_bpe", "sentencepiece"), default="openai_bpe")
    parser.add_argument("--tokenizer_path", default="",
                        help="bpe_simple_vocab_16e6.txt.gz (openai_bpe) or a .model (sentencepiece); copied in")
    args = parser.parse_args(argv)
    try:
        sd = _strip_prefixes(load_state_dict(args.src, args.allow_torchscript))
        activation = args.activation
        if activation == "auto":
            if not any(k in sd for k in OPENAI_EXTRAS):
                print(f"error: {args.src} is not an OpenAI TorchScript archive: pass --activation gelu or quick_gelu "
                      "(open_clip model names ending in -quickgelu use quick_gelu)", file=sys.stderr)
                return 2
            activation = "quick_gelu"
        model = infer_config(sd, args.vision_heads or None, args.text_heads or None, activation,
                             args.text_pool, args.eos_id)
        params = convert_state_dict(sd, model)
    except (ConversionError, FileNotFoundError) as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    model.tokenizer = args.tokenizer
    model.tokenizer_path = ""
    os.makedirs(args.out, exist_ok=True)
    if args.tokenizer_path:
        dst = os.path.join(os.path.abspath(args.out), os.path.basename(args.tokenizer_path))
        shutil.copyfile(args.tokenizer_path, dst)
        model.tokenizer_path = dst
    from dalle import model_dir as checkpoint
    from dalle.modeling.clip import schema

    config = ConfigDict({"model": schema.complete_clip_config(model)})
    checkpoint.save_model(args.out, params, config, extra={"converted_from": os.path.abspath(args.src)})
    n = sum(int(np.prod(v.shape)) for mod in params.values() for v in mod.values())
    print(f"wrote {args.out}: CLIP ViT {model.image_size}px/{model.patch_size}, {n / 1e6:.2f} M params")
    return 0
