"""`dalle export dalle-mini --checkpoint DIR --out OUT`: a dalle DalleBart model -> dalle-mini's published layout.

OUT gets dalle-mini's `config.json` (a `DalleBartConfig`) and `flax_model.msgpack` (the parameter tree of its
`FlaxBartForConditionalGeneration`-style `DalleBart`, scanned `use_scan` layout by default, `--unscanned` for one
module per layer), plus the BART tokenizer files when the model uses one (`tokenizer.json` or `vocab.json` +
`merges.txt`), so dalle-mini's `DalleBart.from_pretrained(OUT)` and `DalleBartProcessor.from_pretrained(OUT)` load
it. The exact inverse of `dalle convert dalle-mini` (dalle/modeling/convert_dalle_mini.py): converting the export
back gives the same parameters, and exporting a converted dalle-mini checkpoint gives back its own tree.

What changes on the way back: layer stacks are split per layer for `--unscanned` (norms dalle-mini creates only in
some layers are dropped there, and must hold their identity values: a trained value there is refused, not lost),
text-embedding rows 0 and 1 are swapped back (BART's `<s>` = 0, `<pad>` = 1), `smelu_dallemini` is `smelu`, and
the image vocabulary is the VQGAN's codes + `image_extra_tokens` with the BOS id right after the codes. Models
dalle-mini cannot express (the decoder-only kind, switches it lacks, Swin v2 layers scanned: its config refuses
them) are refused with the switch named. A model with a sentencepiece vocabulary is exported without a tokenizer
(dalle-mini reads BART BPE only), said so.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import paths, weights_files
from dalle.cli.args import Parser
from dalle.modeling import convert_dalle_mini as importer
from dalle.modeling import norm_placement
from dalle.modeling import schema as model_schema

ConversionError = weights_files.ConversionError

# dalle-mini's activation names (its ACT2FN plus smelu) for ours; other activations have no dalle-mini name.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "silu", "swish": "swish",
                "tanh": "tanh", "smelu_dallemini": "smelu"}
# Our model keys that are training switches, not architecture: dalle-mini's config has no place for them.
_NOT_EXPORTED = {"kind", "image_vocab_size", "image_extra_tokens", "activation_function", "remat", "scan_layers",
                 "init_from", "encoder_init"}


def dalle_mini_config(model: Mapping[str, Any], *, scanned: bool = True, normalize_text: bool = False) -> dict:
    """Our `model` section (kind dalle_bart) -> dalle-mini's config.json dict; refuses what it cannot express."""
    m = dict(model)
    if m.get("kind") != "dalle_bart":
        raise ConversionError(f"model.kind = {m.get('kind')!r}: only dalle_bart models have a dalle-mini layout")
    defaults = model_schema.dalle_bart_defaults()
    copied = set(importer._COPIED)
    refused = [f"model.{k} = {m[k]!r}" for k in sorted(m) if k not in copied and k not in _NOT_EXPORTED
               and k in defaults and m[k] != defaults[k]]
    act = _ACTIVATIONS.get(m["activation_function"])
    if act is None:
        refused.append(f"model.activation_function = {m['activation_function']!r} (dalle-mini knows "
                       f"{', '.join(sorted(_ACTIVATIONS))})")
    if scanned and m["ln_positions"] == "swinv2":  # its DalleBartConfig asserts "scan cannot be used with 'swinv2'"
        refused.append("model.ln_positions = 'swinv2' in the scanned layout (dalle-mini scans no Swin v2 layers: "
                       "export with --unscanned)")
    if refused:
        raise ConversionError("dalle-mini's DalleBartConfig cannot express: " + "; ".join(refused))
    codes, extra = int(m["image_vocab_size"]), int(m.get("image_extra_tokens", 0))
    # The image BOS (decoder start) is the first id after the codes; dalle-mini's published configs, which carry
    # extra ids, name the next one as bos/eos/pad (unused in generation), and DalleBartConfig's defaults, without
    # extra ids, name the start id itself.
    special = codes + 1 if extra else codes
    out: dict[str, Any] = {k: m[k] for k in importer._COPIED}
    out.update({
        "model_type": "dallebart", "architectures": ["eBart"], "is_encoder_decoder": True,
        "activation_function": act, "image_vocab_size": codes + extra, "decoder_start_token_id": codes,
        "bos_token_id": special, "eos_token_id": special, "pad_token_id": special,
        "min_length": int(m["image_length"]) + 1, "max_length": int(m["image_length"]) + 1,
        "use_scan": scanned, "gradient_checkpointing": False, "use_alibi": False, "tie_word_embeddings": False,
        "normalize_text": bool(normalize_text), "do_sample": True, "use_cache": True,
    })
    return out


def _inverse_leaf(flax_module: str, our_module: str, module: str, param: str) -> str | None:
    """Our (module inside a layer, param) -> the leaf path inside dalle-mini's `flax_module`; None when the
    param is not under `our_module`."""
    if module == our_module:
        rest = ""
    elif module.startswith(our_module + "/"):
        rest = module[len(our_module) + 1:]
    else:
        return None
    if flax_module.startswith("FlaxBartAttention_"):
        if not rest and param == "head_scale":
            return "head_scale"
        if not rest and param == "rel_bias":
            return "rel_bias/embedding"
        if rest == "mid_norm":
            return f"mid_layernorm/{param}"
    return f"{rest}/{param}" if rest else param


def _identity(param: str, value: np.ndarray) -> bool:
    return bool(np.all(value == (1 if param == "scale" else 0)))


def export_params(params: Mapping[str, Mapping[str, Any]], cfg: ConfigDict, *, scanned: bool = True
                  ) -> dict[str, np.ndarray]:
    """Our Haiku params -> dalle-mini's flat params (`model/encoder/...`, `lm_head/kernel`), the inverse of
    `convert_dalle_mini.convert_params`."""
    flat = {f"{m}/{p}": np.asarray(v) for m, d in params.items() for p, v in d.items()}
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}

    def take(key: str) -> np.ndarray:
        if key not in flat:
            raise ConversionError(f"the model has no parameter {key!r} (not a dalle_bart model of this config?)")
        used.add(key)
        return flat[key]

    place = norm_placement.get(cfg.ln_positions)
    for side in ("encoder", "decoder"):
        base = f"dalle_bart/{side}"
        emb = take(f"{base}/embed_tokens/embedding").copy()
        if side == "encoder":
            emb[[0, 1]] = emb[[1, 0]]  # dalle pad=0 -> BART <s>=0 / <pad>=1
        out[f"model/{side}/embed_tokens/embedding"] = emb
        for name in ("embed_positions/embedding", "layernorm_embedding/scale", "layernorm_embedding/bias",
                     "final_ln/scale", "final_ln/bias"):
            if f"{base}/{name}" in flat:
                out[f"model/{side}/{name}"] = take(f"{base}/{name}")
        n = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
        cls = "FlaxBartEncoderLayer" if side == "encoder" else "FlaxBartDecoderLayer"
        prefix = f"{base}/layers/layer/"
        layer_keys = [k for k in flat if k.startswith(prefix)]
        has_output_norm = place.output_norm_layers(n)
        for flax_module, our_module in importer._layer_module_map(cfg, side):
            for key in layer_keys:
                module, _, param = key[len(prefix):].rpartition("/")
                leaf = _inverse_leaf(flax_module, our_module, module, param)
                if leaf is None:
                    continue
                stacked = take(key)
                if scanned:
                    value = stacked.reshape(n, 1, 1, -1, 1) if leaf == "head_scale" else stacked
                    out[f"model/{side}/layers/{cls}s/{flax_module}/{leaf}"] = value
                    continue
                for i in range(n):
                    value = stacked[i]
                    # dalle-mini's unscanned layers create the layer-output norm only where it applies, and the
                    # last post-LN layer's without a scale unless force_ln_scale.
                    absent = our_module == "output_norm" and (
                        not has_output_norm[i] or (param == "scale" and i == n - 1 and not cfg.force_ln_scale))
                    if absent:
                        if not _identity(param, value):
                            raise ConversionError(f"{key} of layer {i} holds trained values, but dalle-mini's "
                                                  f"unscanned layout has no such norm there: export scanned")
                        continue
                    if leaf == "head_scale":
                        value = value.reshape(1, 1, -1, 1)
                    out[f"model/{side}/layers/{cls}_{i}/{flax_module}/{leaf}"] = value
    out["lm_head/kernel"] = take("dalle_bart/lm_head/kernel")
    unused = sorted(set(flat) - used)
    if unused:
        raise ConversionError("parameters with no place in dalle-mini's layout:\n  " + "\n  ".join(unused))
    return out


def _nest(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = np.asarray(value)
    return tree


def _tokenizer_dir(config: ConfigDict, home: str) -> tuple[str, tuple[str, ...]]:
    """(folder, BART tokenizer file names) of the model's vocabulary; () when it is not a BART BPE one."""
    from dalle import model_dir as checkpoint

    path = config.get("data", {}).get("tokenizer_path", "") if "data" in config else ""
    if not path:
        return "", ()
    path = checkpoint.resolve_path(home, path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    return folder, importer.tokenizer_files(folder) if os.path.isdir(folder) else ()


def export(checkpoint_dir: str, out: str, *, scanned: bool = True) -> str:
    """Writes the dalle-mini layout of the model in `checkpoint_dir` (model dir or trainer workdir) to `out`;
    returns a one-line summary."""
    from flax import serialization

    from dalle import model_dir as checkpoint

    config, params = checkpoint.load_model(checkpoint_dir)
    params = {m: {p: np.asarray(v) for p, v in d.items()} for m, d in params.items()}
    data = config.data if "data" in config else {}
    # dalle-mini's normalize_text: its TextNormalizer (text_normalizer "dalle_mini"; models converted before that
    # key recorded it as ascii_fold).
    normalize = data.get("text_normalizer", "dalle_mini" if data.get("ascii_fold", False) else "") == "dalle_mini"
    config_json = dalle_mini_config(config.model, scanned=scanned, normalize_text=normalize)
    flat = export_params(params, config.model, scanned=scanned)
    home = checkpoint.exported_model_dir(checkpoint_dir) or checkpoint_dir
    folder, files = _tokenizer_dir(config, home)
    paths.makedirs(out)
    weights = paths.join(out, importer.FLAX_WEIGHTS)
    with paths.open_file(weights + ".partial", "wb") as f:  # a crash never leaves a truncated msgpack there
        f.write(serialization.msgpack_serialize(_nest(flat)))
    paths.replace(weights + ".partial", weights)
    paths.write_text_atomic(paths.join(out, "config.json"), json.dumps(config_json, indent=2, sort_keys=True))
    for name in files:
        paths.path(paths.join(folder, name)).copy(paths.join(out, name), overwrite=True)
    count = sum(int(v.size) for v in flat.values())
    tokenizer = f"tokenizer {', '.join(files)}" if files else (
        "no tokenizer (the model's vocabulary is not BART BPE; dalle-mini cannot read it)")
    return f"dalle-mini {'scanned' if scanned else 'unscanned'} layout, {count:,} parameters; {tokenizer}"


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle export dalle-mini", description=__doc__.split("\n\n")[0],
                    examples="dalle export dalle-mini --checkpoint outputs/finetuned --out exported/dalle-mini")
    parser.add_argument("--checkpoint", required=True, help="a dalle_bart model dir or trainer workdir")
    parser.add_argument("--out", required=True, help="output folder (config.json, flax_model.msgpack, tokenizer)")
    parser.add_argument("--unscanned", action="store_true",
                        help="one parameter module per layer (dalle-mini's use_scan=False) instead of stacked")
    args = parser.parse_args(list(argv))
    from dalle import model_dir as checkpoint

    try:
        summary = export(args.checkpoint, args.out, scanned=not args.unscanned)
    except (ConversionError, checkpoint.CheckpointError, FileNotFoundError) as e:
        print(f"dalle export dalle-mini: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {summary}")
    return 0
