"""`dalle convert dvae --from DIR --out OUT`: OpenAI DALL·E's dVAE weights -> a dalle model directory.

DIR holds the encoder's and the decoder's state dicts as `encoder.pt` and `decoder.pt` (also `.pth`, `.bin`,
`.safetensors` or `.npz`; `--encoder FILE` / `--decoder FILE` name them elsewhere). They are read as data only
(dalle.weights_files): keys as the `dall-e` package names them (`blocks.group_1.block_1.res_path.conv_1.w`, torch
OIHW kernels). The architecture (n_hid, n_blk_per_group, n_init, vocab_size, group count, channels) is read off
the shapes; only `--resolution` (the nominal image side, 256 for the published model) cannot be.

The published `encoder.pkl` / `decoder.pkl` are whole pickled torch modules, which only the full unpickler reads,
and unpickling runs code named in the file. They are never unpickled implicitly. Convert them once, trusting the
files, with the `dall-e` package installed (`pip install --no-deps dall-e==0.1`, next to torch):

    python -c "import torch; torch.save(torch.load('encoder.pkl', weights_only=False).state_dict(), 'encoder.pt')"
    python -c "import torch; torch.save(torch.load('decoder.pkl', weights_only=False).state_dict(), 'decoder.pt')"

or pass `--trust-pickle`, which does the same full unpickle here, with a warning, of the `.pkl`s (found when DIR has
no state dicts) or of torch files the safe loader refuses.
Every key the architecture needs must be present with the right shape and nothing may be left over; otherwise the
error lists every missing, unexpected or misshapen key of each file.
"""

from __future__ import annotations

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

ConversionError = weights_files.ConversionError

PARTS = ("encoder", "decoder")
STATE_DICT_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors", ".npz")
PICKLE_EXTENSION = ".pkl"
PICKLE_COMMAND = ("python -c \"import torch; [torch.save(torch.load(f'{n}.pkl', weights_only=False).state_dict(), "
                  "f'{n}.pt') for n in ('encoder', 'decoder')]\"")
PICKLE_HINT = ("it is a pickled torch module, and unpickling runs code named in the file. If you trust it, convert "
               "it once with the dall-e package installed (pip install --no-deps dall-e==0.1), in DIR: "
               f"{PICKLE_COMMAND} ; or pass --trust-pickle")

_GROUP = re.compile(r"^blocks\.group_(\d+)\.")
_BLOCK = re.compile(r"^blocks\.group_1\.block_(\d+)\.")


# ----------------------------------------------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------------------------------------------
def torch_key(module: str, param: str) -> tuple[str, str]:
    """Our (module, param) -> (part, key in that part's state dict), e.g.
    ("encoder/group_1/block_1/res_path/conv_1", "w") -> ("encoder", "blocks.group_1.block_1.res_path.conv_1.w")."""
    part, _, rest = module.partition("/")
    return part, "blocks." + rest.replace("/", ".") + "." + param


def key_table(cfg) -> dict[str, dict[str, tuple[str, str, tuple[int, ...]]]]:
    """{part: {torch key: (our module, our param, our shape)}} for every weight of the architecture."""
    from dalle.modeling.dvae import model as dvae_lib

    table: dict[str, dict[str, tuple[str, str, tuple[int, ...]]]] = {p: {} for p in PARTS}
    for module, params in dvae_lib.expected_param_shapes(cfg).items():
        for name, shape in params.items():
            part, key = torch_key(module, name)
            table[part][key] = (module, name, shape)
    return table


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape


def convert_state_dicts(state_dicts: Mapping[str, Mapping[str, Any]], cfg,
                        sources: Mapping[str, str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{"encoder": sd, "decoder": sd} (numpy or torch tensors) -> params. Raises ConversionError listing every
    missing, unexpected or misshapen key of each part (named by its file when `sources` gives it)."""
    table = key_table(cfg)
    params: dict[str, dict[str, np.ndarray]] = {}
    problems = []
    for part in PARTS:
        given, want = state_dicts[part], table[part]
        name = f"{part} state dict" + (f" {sources[part]!r}" if sources and part in sources else "")
        shapes = _shapes(given)
        lines = param_check.mismatch_lines({k: _torch_shape(s) for k, (_, _, s) in want.items()}, shapes, "keys")
        problems.extend(f"{name}: {line}" for line in lines)
        if lines:
            continue
        for key, (module, param, _) in want.items():
            value = weights_files.tensor_to_numpy(given[key])
            if value.ndim == 4:  # torch OIHW -> HWIO
                value = np.transpose(value, (2, 3, 1, 0))
            params.setdefault(module, {})[param] = np.asarray(value, np.float32)
    if problems:
        raise ConversionError("the dVAE state dicts do not match the architecture:\n  " + "\n  ".join(problems))
    return params


# ----------------------------------------------------------------------------------------------------------------
# Architecture
# ----------------------------------------------------------------------------------------------------------------
def _shapes(sd: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.shape(v)) for k, v in sd.items()}


def _need(shapes: Mapping[str, tuple[int, ...]], key: str, part: str, source: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ConversionError(f"cannot infer the dVAE architecture: {part} state dict {source!r} has no {key!r} "
                              f"(is it a dall_e {part.capitalize()} state dict?)")
    return shapes[key]


def infer_config(state_dicts: Mapping[str, Mapping[str, Any]], resolution: int = 256,
                 sources: Mapping[str, str] | None = None) -> dict[str, int]:
    """The `model` section's architecture values from the weight shapes of both parts."""
    sources = sources or {}
    enc, dec = _shapes(state_dicts["encoder"]), _shapes(state_dicts["decoder"])
    src_e, src_d = sources.get("encoder", "encoder"), sources.get("decoder", "decoder")
    enc_in = _need(enc, "blocks.input.w", "encoder", src_e)
    enc_out = _need(enc, "blocks.output.conv.w", "encoder", src_e)
    dec_in = _need(dec, "blocks.input.w", "decoder", src_d)
    dec_out = _need(dec, "blocks.output.conv.w", "decoder", src_d)
    values = {}
    for part, shapes, src in (("encoder", enc, src_e), ("decoder", dec, src_d)):
        groups = {int(m.group(1)) for k in shapes for m in [_GROUP.match(k)] if m}
        blocks = {int(m.group(1)) for k in shapes for m in [_BLOCK.match(k)] if m}
        if not groups or not blocks:
            raise ConversionError(f"cannot infer the dVAE architecture: {part} state dict {src!r} has no "
                                  "blocks.group_1.block_1.* keys")
        values[part] = (max(groups), max(blocks))
    if values["encoder"] != values["decoder"]:
        raise ConversionError(
            f"the encoder ({src_e!r}: {values['encoder'][0]} groups of {values['encoder'][1]} blocks) and the decoder "
            f"({src_d!r}: {values['decoder'][0]} groups of {values['decoder'][1]} blocks) have different depths")
    n_hid_e, n_hid_d = enc_in[0], dec_out[1]
    if n_hid_e != n_hid_d:
        raise ConversionError(f"the encoder ({src_e!r}) has n_hid = {n_hid_e} (blocks.input.w {enc_in}) but the "
                              f"decoder ({src_d!r}) has n_hid = {n_hid_d} (blocks.output.conv.w {dec_out})")
    if enc_out[0] != dec_in[1]:
        raise ConversionError(f"the encoder ({src_e!r}) has {enc_out[0]} codes (blocks.output.conv.w {enc_out}) but "
                              f"the decoder ({src_d!r}) reads {dec_in[1]} (blocks.input.w {dec_in})")
    if dec_out[0] % 2:
        raise ConversionError(f"decoder ({src_d!r}) blocks.output.conv.w {dec_out}: an odd number of output "
                              "channels, not logit-Laplace (location, log-scale) pairs")
    group_count, n_blk = values["encoder"]
    return dict(resolution=int(resolution), input_channels=int(enc_in[1]), output_channels=int(dec_out[0] // 2),
                n_hid=int(n_hid_e), n_blk_per_group=int(n_blk), n_init=int(dec_in[0]), vocab_size=int(enc_out[0]),
                group_count=int(group_count))


def model_config(arch: Mapping[str, Any]) -> ConfigDict:
    """A validated root config with the `model` section for these architecture values."""
    from dalle import config as config_lib

    c = ConfigDict()
    c.name = "converted_dvae"
    c.model = ConfigDict({"kind": "dvae", **{k: int(v) for k, v in arch.items()}})
    try:
        return config_lib.validate(c)
    except config_lib.ConfigError as e:
        raise ConversionError(f"the weights describe an invalid dVAE: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# Loading sources
# ----------------------------------------------------------------------------------------------------------------
def find_part(directory: str, part: str) -> str:
    """DIR/<part>.<ext> for the first state-dict extension present, else DIR/<part>.pkl, else an error."""
    for ext in STATE_DICT_EXTENSIONS + (PICKLE_EXTENSION,):
        path = os.path.join(directory, part + ext)
        if os.path.isfile(path):
            return path
    names = ", ".join(part + e for e in STATE_DICT_EXTENSIONS + (PICKLE_EXTENSION,))
    raise ConversionError(f"--from {directory!r} has no {part} weights (looked for {names})")


def load_part(path: str, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """One part's state dict, read as data only. A `.pkl` (a pickled module), or a torch file the safe loader
    refuses, is fully unpickled only with `trust_pickle`."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path!r} does not exist")
    if path.endswith(PICKLE_EXTENSION):
        if not trust_pickle:
            raise ConversionError(f"{path!r}: {PICKLE_HINT}")
        return unpickle_state_dict(path)
    try:
        return weights_files.load_state_dict(path)
    except ConversionError as e:
        if path.endswith((".safetensors", ".npz")):
            raise
        if trust_pickle:
            return unpickle_state_dict(path)
        raise ConversionError(f"{e}\n  If it is a published dall-e file, {PICKLE_HINT}") from None


def unpickle_state_dict(path: str) -> dict[str, np.ndarray]:
    """The full unpickle of a trusted pickled `dall_e` module (or state dict): runs code named in the file."""
    print(f"warning: --trust-pickle: fully unpickling {path!r}, which runs code named in the file; use only files "
          "you trust", file=sys.stderr)
    try:
        import torch
    except ImportError:
        raise ConversionError(f"{path!r}: unpickling needs torch and the dall-e package "
                              "(pip install -r requirements-ref.txt; pip install --no-deps dall-e==0.1)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise ConversionError(f"{path!r}: unpickling needs the module {e.name!r} "
                              "(pip install --no-deps dall-e==0.1)") from None
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path!r} holds a {type(obj).__name__}, neither a torch module nor a state dict")
    return {str(k): weights_files.tensor_to_numpy(v) for k, v in obj.items() if hasattr(v, "shape")}


def load_source(src: str = "", resolution: int = 256, trust_pickle: bool = False, encoder: str = "",
                decoder: str = "") -> tuple[dict, ConfigDict]:
    """(params, config) from DIR's encoder/decoder files (or the given files)."""
    from dalle.modeling.dvae import model as dvae_lib

    if src and not os.path.isdir(src):
        raise ConversionError(f"--from {src!r} is not a directory (it should hold encoder.pt and decoder.pt)")
    given = {"encoder": encoder, "decoder": decoder}
    paths = {}
    for part in PARTS:
        if given[part]:
            paths[part] = given[part]
        elif src:
            paths[part] = find_part(src, part)
        else:
            raise ConversionError(f"no {part} weights: pass --from DIR or --{part} FILE")
    state_dicts = {part: load_part(paths[part], trust_pickle) for part in PARTS}
    config = model_config(infer_config(state_dicts, resolution, paths))
    cfg = dvae_lib.DVAEConfig.from_config(config)
    params = convert_state_dicts(state_dicts, cfg, paths)
    dvae_lib.check_params(params, cfg, what=f"converted params of {paths['encoder']!r} + {paths['decoder']!r}")
    return params, config


def write_converted(src: str, out: str, resolution: int = 256, trust_pickle: bool = False, encoder: str = "",
                    decoder: str = "", progress: bool | None = False) -> str:
    """Converts (see `load_source`) into the dalle model directory `out`; returns a one-line summary. `progress`:
    a bar over the read and write stages on stderr."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.dvae import model as dvae_lib

    with Stages("dalle convert dvae", ("read + convert", "write"), enabled=progress) as stages:
        stages.start("read + convert")
        params, config = load_source(src, resolution, trust_pickle, encoder, decoder)
        origin = os.path.abspath(src) if src else {"encoder": os.path.abspath(encoder),
                                                    "decoder": os.path.abspath(decoder)}
        stages.start("write")
        checkpoint.save_model(out, params, config, extra={"converted_from": origin})
    cfg = dvae_lib.DVAEConfig.from_config(config)
    return (f"dVAE f{cfg.downsample_factor}, {cfg.vocab_size} codes, n_hid {cfg.n_hid}, "
            f"{dvae_lib.num_params(params):,} params")


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle convert dvae", description=__doc__.split("\n\n")[0],
                    epilog="The published encoder.pkl / decoder.pkl are pickled torch modules: never unpickled "
                           "unless --trust-pickle.\nTo make state dicts of them once, in their folder, with the "
                           "dall-e package installed\n(pip install --no-deps dall-e==0.1):\n  " + PICKLE_COMMAND,
                    examples="dalle convert dvae --from weights/dall_e --out checkpoints/dvae")
    parser.add_argument("--from", dest="src", default="",
                        help="directory with encoder.pt and decoder.pt (or .pth/.bin/.safetensors/.npz)")
    parser.add_argument("--out", required=True, help="output dalle model directory")
    parser.add_argument("--encoder", default="", help="the encoder's state dict, if not DIR/encoder.*")
    parser.add_argument("--decoder", default="", help="the decoder's state dict, if not DIR/decoder.*")
    parser.add_argument("--resolution", type=int, default=256,
                        help="the image side the model was trained at (256 for the published dVAE)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="fully unpickle encoder.pkl/decoder.pkl, or torch files that are not plain state dicts "
                             "(runs code named in the files; needs the dall-e package)")
    args = parser.parse_args(list(argv))
    try:
        summary = write_converted(args.src, args.out, args.resolution, args.trust_pickle, args.encoder, args.decoder,
                                  progress=None)
    except ConversionError as e:
        print(f"dalle convert dvae: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {summary}")
    return 0
