"""`dalle convert vqgan --from SRC --out DIR`: published VQGAN weights -> a dalle model checkpoint.

SRC is either
  * a taming-transformers checkpoint (`last.ckpt`, or any torch file holding a VQModel state dict; also `.npz`),
    optionally with its `model.yaml` passed as `--taming-config` (otherwise the architecture is read off the
    weight shapes; only `--resolution` cannot be, and it only matters for where attention sits), or
  * a vqgan-jax (Flax) checkpoint directory: `config.json` + `flax_model.msgpack` (what dalle-mini loads).

Both become the same params (see vqgan.py for the name mapping). Every weight the architecture needs must be
present with the right shape and nothing else may be left over (the discriminator/LPIPS `loss.*` entries of a
taming training checkpoint are dropped, and reported); otherwise the error lists every offending key.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import weights_files
from dalle.modeling import param_check
from dalle.progress import Stages
from dalle.cli.args import Parser

_NUMBERED = re.compile(r"^(down|up|block|attn)_(\d+)$")
# Entries of a taming training checkpoint that are not part of the autoencoder.
_IGNORED_PREFIXES = ("loss.",)


ConversionError = weights_files.ConversionError  # source weights that do not fit; the message lists the keys


# ----------------------------------------------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------------------------------------------
def taming_key(module: str, param: str) -> str:
    """Our (module, param) -> taming state-dict key, e.g. ("encoder/down_1/block_0/conv1", "w") ->
    "encoder.down.1.block.0.conv1.weight". `mid/block_1`, `mid/attn_1` keep their underscore, as in taming."""
    parts = module.split("/")
    out = []
    for i, p in enumerate(parts):
        m = _NUMBERED.match(p)
        if m and not (i > 0 and parts[i - 1] == "mid"):
            out.extend([m.group(1), m.group(2)])
        else:
            out.append(p)
    if module == "quantize":
        return "quantize.embedding.weight"
    suffix = {"w": "weight", "b": "bias", "scale": "weight", "offset": "bias"}[param]
    return ".".join(out + [suffix])


def key_table(cfg) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """taming key -> (our module, our param, our shape) for every weight of the architecture."""
    from dalle.modeling.vqgan import model as vqgan_lib

    table = {}
    for module, params in vqgan_lib.expected_param_shapes(cfg).items():
        for name, shape in params.items():
            table[taming_key(module, name)] = (module, name, shape)
    return table


def _to_ours(value: np.ndarray, param: str) -> np.ndarray:
    if param == "w":  # torch conv (out, in, kh, kw) -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    return value


def convert_taming_state_dict(state_dict: Mapping[str, Any], cfg) -> tuple[dict, list[str]]:
    """Taming VQModel state dict (numpy or torch tensors) -> (params, ignored keys). Raises ConversionError
    listing every missing, unexpected or misshapen key."""
    table = key_table(cfg)
    ignored = sorted(k for k in state_dict if k.startswith(_IGNORED_PREFIXES))
    given = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_PREFIXES)}
    want = {key: (shape[3], shape[2], shape[0], shape[1]) if name == "w" else shape
            for key, (_, name, shape) in table.items()}
    problems = param_check.mismatch_lines(want, {k: tuple(np.shape(v)) for k, v in given.items()}, "keys")
    if problems:
        raise ConversionError("\n  ".join(["the taming state dict does not match the VQGAN config:", *problems]))
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, (module, name, _) in table.items():
        params.setdefault(module, {})[name] = _to_ours(_as_numpy(given[key]), name).astype(np.float32)
    return params, ignored


def flax_to_taming_state_dict(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """vqgan-jax param tree -> taming-style flat state dict (torch layouts), so one table serves both sources.

    vqgan-jax names modules like taming with `_i` suffixes (`down_0/block_1`, `up_3/upsample/conv`, `mid/attn_1`),
    convs hold `kernel` (HWIO), GroupNorms `scale`/`bias`, and the codebook is `quantize/embedding/embedding`."""
    if "params" in tree and len(tree) == 1:
        tree = tree["params"]
    flat: dict[str, np.ndarray] = {}

    def walk(node: Mapping[str, Any], path: list[str]) -> None:
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, path + [str(k)])
                continue
            value = np.asarray(v)
            module = path
            if module[-2:] == ["quantize", "embedding"] and k == "embedding":
                flat["quantize.embedding.weight"] = value
                continue
            parts = []
            for i, p in enumerate(module):
                m = _NUMBERED.match(p)
                if m and not (i > 0 and module[i - 1] == "mid"):
                    parts.extend([m.group(1), m.group(2)])
                else:
                    parts.append(p)
            if k == "kernel":
                flat[".".join(parts + ["weight"])] = np.transpose(value, (3, 2, 0, 1))
            elif k == "scale":
                flat[".".join(parts + ["weight"])] = value
            else:  # bias, or anything unknown (reported as unexpected by the table check)
                flat[".".join(parts + [str(k)])] = value

    walk(tree, [])
    return flat


_as_numpy = weights_files.tensor_to_numpy


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------
def infer_taming_config(state_dict: Mapping[str, Any], resolution: int = 256) -> dict[str, Any]:
    """Reads ch, ch_mult, num_res_blocks, attention levels, z_channels and the codebook off the weight shapes."""
    sd = {k: tuple(v.shape) if hasattr(v, "shape") else np.shape(v) for k, v in state_dict.items()}

    def need(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise ConversionError(f"cannot infer the architecture: key {key!r} is missing "
                                  "(is this a taming VQModel state dict?)")
        return sd[key]

    ch = need("encoder.conv_in.weight")[0]
    levels = 0
    while f"encoder.down.{levels}.block.0.conv1.weight" in sd:
        levels += 1
    if levels == 0:
        raise ConversionError("cannot infer the architecture: no encoder.down.0.block.0.conv1.weight")
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"][0] // ch for i in range(levels))
    num_res_blocks = 0
    while f"encoder.down.0.block.{num_res_blocks}.conv1.weight" in sd:
        num_res_blocks += 1
    attn_resolutions = tuple(resolution // 2 ** i for i in range(levels)
                             if f"encoder.down.{i}.attn.0.q.weight" in sd)
    n_embed, embed_dim = need("quantize.embedding.weight")
    z_channels = need("quant_conv.weight")[1]
    if need("encoder.conv_out.weight")[0] != z_channels:
        raise ConversionError(f"encoder.conv_out has {sd['encoder.conv_out.weight'][0]} output channels but "
                              f"quant_conv takes {z_channels} (double_z models are not VQGANs)")
    resamp_with_conv = levels == 1 or "encoder.down.0.downsample.conv.weight" in sd
    return dict(resolution=resolution, in_channels=need("encoder.conv_in.weight")[1],
                out_ch=need("decoder.conv_out.weight")[0], ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks,
                attn_resolutions=attn_resolutions, z_channels=z_channels, resamp_with_conv=resamp_with_conv,
                n_embed=n_embed, embed_dim=embed_dim)


def config_from_taming_yaml(path: str) -> dict[str, Any]:
    """`model.params.{ddconfig, n_embed, embed_dim}` of a taming model.yaml."""
    import yaml

    with open(path) as f:
        doc = yaml.safe_load(f)
    try:
        params = doc["model"]["params"]
        dd = params["ddconfig"]
    except (KeyError, TypeError):
        raise ConversionError(f"{path}: no model.params.ddconfig (is this a taming config?)") from None
    if dd.get("double_z"):
        raise ConversionError(f"{path}: ddconfig.double_z is true; a VQGAN has double_z false")
    return dict(resolution=dd["resolution"], in_channels=dd["in_channels"], out_ch=dd["out_ch"], ch=dd["ch"],
                ch_mult=tuple(dd["ch_mult"]), num_res_blocks=dd["num_res_blocks"],
                attn_resolutions=tuple(dd["attn_resolutions"]), z_channels=dd["z_channels"],
                dropout=float(dd.get("dropout", 0.0)), n_embed=params["n_embed"], embed_dim=params["embed_dim"])


# The architecture keys of a vqgan-jax `config.json` (VQGANConfig of patil-suraj/vqgan-jax): the required ones,
# then the optional ones.
VQGAN_JAX_KEYS = ("resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                  "z_channels", "n_embed", "embed_dim")
VQGAN_JAX_OPTIONAL_KEYS = ("dropout", "resamp_with_conv")
FLAX_WEIGHTS = weights_files.FLAX_WEIGHTS


def is_vqgan_jax_dir(directory: str) -> bool:
    """Whether `directory` holds a vqgan-jax checkpoint: flax weights and a config.json with every architecture
    key (what dalle-mini's VQGAN repositories hold). Never raises: a folder that is not one is simply not one."""
    doc = weights_files.flax_checkpoint_config(directory)
    return doc is not None and all(k in doc for k in VQGAN_JAX_KEYS)


def config_from_vqgan_jax(path: str) -> dict[str, Any]:
    """The fields of a vqgan-jax `config.json` that define the architecture."""
    with open(path) as f:
        doc = json.load(f)
    missing = [k for k in VQGAN_JAX_KEYS if k not in doc]
    if missing:
        raise ConversionError(f"{path}: missing keys {missing} (is this a vqgan-jax config.json?)")
    if doc.get("double_z"):
        raise ConversionError(f"{path}: double_z is true; a VQGAN has double_z false")
    out = {k: doc[k] for k in VQGAN_JAX_KEYS + VQGAN_JAX_OPTIONAL_KEYS if k in doc}
    out["ch_mult"] = tuple(out["ch_mult"])
    out["attn_resolutions"] = tuple(out["attn_resolutions"])
    return out


def model_config(arch: Mapping[str, Any], legacy_loss: bool = True) -> ConfigDict:
    """A validated root config with the `model` section for these architecture values."""
    from dalle import config as config_lib

    c = ConfigDict()
    c.name = "converted_vqgan"
    c.model = ConfigDict({"kind": "vqgan"})
    for k, v in arch.items():
        c.model[k] = tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else v
    c.model.legacy_loss = legacy_loss
    return config_lib.validate(c)


# ----------------------------------------------------------------------------------------------------------------
# Loading sources
# ----------------------------------------------------------------------------------------------------------------
def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """A taming checkpoint's (or an .npz/.safetensors) tensors, read as data only (dalle.weights_files)."""
    return weights_files.load_state_dict(path)


def load_source(src: str, taming_config: str = "", resolution: int = 256,
                legacy_loss: bool = True) -> tuple[dict, ConfigDict, list[str]]:
    """(params, config, ignored keys) from a taming checkpoint file or a vqgan-jax directory."""
    from dalle.modeling.vqgan import model as vqgan_lib

    if os.path.isdir(src):
        msgpack = os.path.join(src, FLAX_WEIGHTS)
        cfg_json = os.path.join(src, "config.json")
        if not os.path.isfile(msgpack) or not os.path.isfile(cfg_json):
            raise ConversionError(f"{src!r} is a directory but not a vqgan-jax checkpoint "
                                  "(needs config.json and flax_model.msgpack)")
        from flax import serialization

        with open(msgpack, "rb") as f:
            tree = serialization.msgpack_restore(f.read())
        state_dict = flax_to_taming_state_dict(tree)
        arch = config_from_vqgan_jax(cfg_json)
    elif os.path.isfile(src):
        state_dict = load_torch_state_dict(src)
        arch = config_from_taming_yaml(taming_config) if taming_config else infer_taming_config(state_dict,
                                                                                                  resolution)
    else:
        raise ConversionError(f"--from {src!r} does not exist")
    config = model_config(arch, legacy_loss)
    cfg = vqgan_lib.VQGANConfig.from_config(config)
    params, ignored = convert_taming_state_dict(state_dict, cfg)
    vqgan_lib.check_params(params, cfg, what=f"converted params of {src!r}")
    return params, config, ignored


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle convert vqgan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="src", required=True,
                        help="taming .ckpt/.pt/.npz state dict, or a vqgan-jax dir (config.json + flax_model.msgpack)")
    parser.add_argument("--out", required=True, help="output dalle model checkpoint directory")
    parser.add_argument("--taming-config", default="", help="taming model.yaml (else inferred from the weights)")
    parser.add_argument("--resolution", type=int, default=256,
                        help="image side the model was trained at, when inferred from a taming state dict")
    parser.add_argument("--no-legacy-loss", action="store_true",
                        help="record the fixed quantizer loss weighting (published taming models use the legacy one)")
    args = parser.parse_args(list(argv))
    try:
        summary = write_converted(args.src, args.out, args.taming_config, args.resolution,
                                  legacy_loss=not args.no_legacy_loss, progress=None)
    except ConversionError as e:
        print(f"dalle convert vqgan: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {summary}")
    return 0


def write_converted(src: str, out: str, taming_config: str = "", resolution: int = 256,
                    legacy_loss: bool = True, progress: bool | None = False) -> str:
    """Converts `src` (see `load_source`) into the dalle model directory `out`; returns a one-line summary. Also
    what `dalle convert dalle-mini` runs on the vqgan-jax checkpoint it finds next to dalle-mini's weights.
    `progress`: a bar over the read and write stages on stderr (None: when it is a terminal)."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.vqgan import model as vqgan_lib

    with Stages("dalle convert vqgan", ("read + convert", "write"), enabled=progress) as stages:
        stages.start("read + convert")
        params, config, ignored = load_source(src, taming_config, resolution, legacy_loss=legacy_loss)
        stages.start("write")
        checkpoint.save_model(out, params, config, extra={"converted_from": os.path.abspath(src)})
    cfg = vqgan_lib.VQGANConfig.from_config(config)
    return (f"VQGAN f{cfg.downsample_factor}, {cfg.n_embed} codes, {vqgan_lib.num_params(params):,} params"
            + (f" ({len(ignored)} loss.* keys dropped)" if ignored else ""))
