"""Tiny random-weight checkpoints in the layouts dalle-mini publishes, for the converter and import tests.

  * dalle-mini: `config.json` + `flax_model.msgpack` (+ BART tokenizer files), made from the golden fixtures of
    tools/make_dalle_mini_fixtures.py (real dalle-mini parameter trees), resized to the sizes a test needs;
  * vqgan-jax: `config.json` + `flax_model.msgpack` whose tree is written from a taming state dict with vqgan-jax's
    names, independently of the converter (`vqgan_jax_tree` is the inverse of `flax_to_taming_state_dict`; its names,
    shapes and config keys are checked against vqgan-jax's own files, tests/fixtures/vqgan_jax_f2_64.npz).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Mapping

import numpy as np

FIXTURES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "dalle_mini_*.npz")))
CAPTIONS = ["a red circle on a black background", "two blue squares", "a small green triangle in the corner",
            "a yellow star", "an orange circle and a purple square"] * 4


def load_fixture(path_or_name: str) -> tuple[Any, dict, dict[str, np.ndarray]]:
    """(npz, dalle-mini config.json dict, flat params) of a golden fixture, by path or by a part of its name."""
    path = path_or_name if os.path.isfile(path_or_name) else [p for p in FIXTURES if path_or_name in p][0]
    z = np.load(path)
    config = json.loads(str(z["config_json"]))
    flat = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    return z, config, flat


def _nest(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for k, v in flat.items():
        node = tree
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = np.asarray(v)
    return tree


def write_dalle_mini_dir(directory: str, config: Mapping[str, Any], flat: Mapping[str, Any],
                         dtype: Any = None) -> str:
    """dalle-mini's published files (config.json + flax_model.msgpack), weights stored in `dtype` if given."""
    from flax import serialization

    if dtype is not None:
        flat = {k: np.asarray(v).astype(dtype) for k, v in flat.items()}
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dict(config), f)
    with open(os.path.join(directory, "flax_model.msgpack"), "wb") as f:
        f.write(serialization.msgpack_serialize(_nest(flat)))
    return directory


def resized(config: Mapping[str, Any], flat: Mapping[str, np.ndarray], *, image_length: int | None = None,
            codes: int | None = None, max_text_length: int | None = None, encoder_vocab_size: int | None = None,
            seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """A dalle-mini (config, flat params) with other sizes: the tables those sizes set are cut or grown with
    random rows (dalle-mini keeps `image_vocab_size - decoder_start_token_id` extra image rows, plus BOS)."""
    rng = np.random.default_rng(seed)
    c = dict(config)
    extra = c["image_vocab_size"] - c["decoder_start_token_id"]
    if codes is not None:
        c["image_vocab_size"], c["decoder_start_token_id"] = codes + extra, codes
        c["bos_token_id"] = c["eos_token_id"] = c["pad_token_id"] = codes + 1
    for key, value in (("image_length", image_length), ("max_text_length", max_text_length),
                       ("encoder_vocab_size", encoder_vocab_size)):
        if value is not None:
            c[key] = value
    c["max_length"] = c["min_length"] = c["image_length"] + 1
    rows = {"model/decoder/embed_positions/embedding": (0, c["image_length"]),
            "model/encoder/embed_positions/embedding": (0, c["max_text_length"]),
            "model/encoder/embed_tokens/embedding": (0, c["encoder_vocab_size"]),
            "model/decoder/embed_tokens/embedding": (0, c["image_vocab_size"] + 1),
            "lm_head/kernel": (1, c["image_vocab_size"] + 1)}
    out = dict(flat)
    for key, (axis, size) in rows.items():
        table = np.asarray(flat[key])
        have = table.shape[axis]
        if size <= have:
            out[key] = np.take(table, np.arange(size), axis=axis)
        else:
            shape = list(table.shape)
            shape[axis] = size - have
            grow = (0.02 * rng.standard_normal(shape)).astype(table.dtype)
            out[key] = np.concatenate([table, grow], axis=axis)
    return c, out


def vqgan_jax_tree(state_dict: Mapping[str, np.ndarray]) -> dict:
    """A taming VQModel state dict (numpy, torch layouts) -> the param tree vqgan-jax saves: modules named like
    taming with `_i` suffixes (`down_0/block_1`), HWIO conv kernels, GroupNorm `scale`/`bias`, and the codebook at
    `quantize/embedding/embedding`."""
    tree: dict = {}

    def put(path_parts: list[str], value: np.ndarray) -> None:
        node = tree
        for p in path_parts[:-1]:
            node = node.setdefault(p, {})
        node[path_parts[-1]] = value

    for key, value in state_dict.items():
        value = np.asarray(value)
        parts = key.split(".")
        if key == "quantize.embedding.weight":
            put(["quantize", "embedding", "embedding"], value)
            continue
        names, i = [], 0
        while i < len(parts) - 1:
            if parts[i] in ("down", "up", "block", "attn") and parts[i + 1].isdigit():
                names.append(f"{parts[i]}_{parts[i + 1]}")
                i += 2
            else:
                names.append(parts[i])
                i += 1
        leaf = parts[-1]
        if value.ndim == 4:
            put(names + ["kernel"], value.transpose(2, 3, 1, 0))
        elif leaf == "weight":
            put(names + ["scale"], value)
        else:
            put(names + ["bias"], value)
    return tree


def write_vqgan_jax_dir(directory: str, state_dict: Mapping[str, np.ndarray], arch: Mapping[str, Any]) -> str:
    """vqgan-jax's published files for a taming state dict and its architecture (ddconfig + n_embed, embed_dim).
    config.json has the keys vqgan-jax's VQGANConfig saves (no `model_type`: it declares none), less transformers'
    bookkeeping (`architectures`, `transformers_version`); tests/test_convert_vqgan.py checks both against
    vqgan-jax's own files."""
    from flax import serialization

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "flax_model.msgpack"), "wb") as f:
        f.write(serialization.msgpack_serialize(vqgan_jax_tree(state_dict)))
    doc = {"double_z": False, "resamp_with_conv": True, "give_pre_end": False, "dropout": 0.0,
           **{k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}}
    doc["num_resolutions"] = len(doc["ch_mult"])
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(doc, f)
    return directory


# An f4 VQGAN over 16 px images: a 4x4 token grid. ch=32 because vqgan-jax's GroupNorms have 32 groups.
TINY_VQGAN = dict(resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1,
                  attn_resolutions=(), z_channels=8, n_embed=40, embed_dim=8)


def random_taming_state_dict(arch: Mapping[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random taming-layout weights for `arch` that decode to varied images: fan-in scaled convs, unit norms."""
    from dalle.modeling.vqgan import convert as vqgan_convert
    from dalle.modeling.vqgan import model as vqgan_lib

    cfg = vqgan_lib.VQGANConfig.from_config(dict(arch))
    rng = np.random.default_rng(seed)
    sd = {}
    for key, (_, name, shape) in vqgan_convert.key_table(cfg).items():
        if name == "w":  # ours HWIO -> torch OIHW
            value = rng.standard_normal((shape[3], shape[2], shape[0], shape[1])) / np.sqrt(np.prod(shape[:3]))
        elif name == "scale":
            value = np.ones(shape)
        elif name in ("offset", "b"):
            value = np.zeros(shape)
        else:  # the codebook
            value = rng.standard_normal(shape)
        sd[key] = value.astype(np.float32)
    return sd


def tiny_dalle_mini(root: str, *, vqgan_place: str = "beside", fixture: str = "normformer",
                    dtype: Any = None, **sizes: Any) -> str:
    """dalle-mini's published layout under `root`: `root/dalle-mini` (weights of a golden fixture resized to a
    4x4 token grid and 16 text tokens by default, and a BART tokenizer) and a vqgan-jax VQGAN of TINY_VQGAN
    `beside` it (`root/vqgan_imagenet_f4_40`), `inside` it (`root/dalle-mini/vqgan`) or nowhere (`none`).
    Returns the dalle-mini directory."""
    from dalle.tokenizers import bart_bpe

    _, config, flat = load_fixture(fixture)
    config, flat = resized(config, flat, **{"image_length": 16, "codes": TINY_VQGAN["n_embed"], "max_text_length": 16,
                                            **sizes})
    src = write_dalle_mini_dir(os.path.join(root, "dalle-mini"), config, flat, dtype)
    bart_bpe.train_tiny_bpe(CAPTIONS, src, vocab_size=300)
    places = {"beside": os.path.join(root, "vqgan_imagenet_f4_40"), "inside": os.path.join(src, "vqgan")}
    if vqgan_place in places:
        write_vqgan_jax_dir(places[vqgan_place], random_taming_state_dict(TINY_VQGAN), TINY_VQGAN)
    return src
