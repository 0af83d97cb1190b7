"""Fixtures proving that dalle-mini itself loads what `dalle export dalle-mini` writes and computes our logits.

The golden fixtures of tools/make_dalle_mini_fixtures.py go dalle-mini -> dalle; these go the other way. For each
layout below, this tool
  (a) in our venv: builds a small dalle_bart model of ours (our init plus seeded noise on every parameter, so each
      switch changes the function), saves it as a model dir (with a tiny BART BPE tokenizer where the layout says),
      exports it with `dalle export dalle-mini`, scanned and `--unscanned`, and records every exported file's
      sha256;
  (b) in the peer venv (.venv-dallemini, dalle-mini 0.1.5; this file re-runs itself there with `--peer`): loads
      each export with `DalleBart.from_pretrained(OUT, _do_init=False)` (dalle-mini's own inference recipe),
      requires its parameter tree to be exactly the one the model expects (transformers only warns on missing or
      unexpected keys), computes its logits on the fixed inputs and, where the export has a tokenizer, encodes the
      captions with `DalleBartProcessor.from_pretrained(OUT)`.
Then it compares our logits with dalle-mini's and writes tests/fixtures/export_check_<layout>.npz: our model dir's
config and params, tokenizer files, inputs, dalle-mini's logits and processor ids, the exported files' sha256, and
the dalle-mini version. tests/test_export_dalle_mini.py rebuilds the model dir, exports it with today's exporter and
checks the bytes and the logits, without the peer venv.

From the repo root (after `python tools/make_dalle_mini_fixtures.py --setup` made .venv-dallemini):

    .venv/bin/python tools/make_export_check_fixtures.py [--only normformer_glu,...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures")
PEER_PYTHON = os.path.join(ROOT, ".venv-dallemini", "bin", "python")
VARIANTS = {"scanned": [], "unscanned": ["--unscanned"]}  # export variant -> extra `dalle export` flags
CAPTIONS = ["a red circle", "two blue squares and a small green triangle in the corner"]  # the 2nd is cut
TOLERANCE = 1e-4

SMALL: dict[str, Any] = dict(kind="dalle_bart", d_model=32, encoder_layers=2, decoder_layers=2,
                             encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=48,
                             decoder_ffn_dim=48, encoder_vocab_size=60, image_vocab_size=40, max_text_length=8,
                             image_length=12)

# name -> (our model overrides, whether the model dir carries a BART BPE tokenizer, export variants)
LAYOUTS: dict[str, tuple[dict[str, Any], bool, tuple[str, ...]]] = {
    # config/mini's switches: NormFormer, GLU, LayerNorm, GELU, extra image rows between the codes and BOS, and a
    # BART tokenizer (which the export copies and dalle-mini's processor reads).
    "normformer_glu": (dict(encoder_vocab_size=300, image_extra_tokens=5), True, ("scanned", "unscanned")),
    # Swin v2 res-post-norm with RMSNorm, cosine attention, head scale, Swin relative bias, Sinkhorn encoder
    # attention, scaled embeddings, a plain swish MLP and no extra image rows; 7 decoder layers, so the 6th has
    # Swin v2's layer-output norm and the others' (never applied) are left out of the export. Unscanned only:
    # dalle-mini's config refuses scanned Swin v2. Its init needs text length = image length; d_model 16 keeps
    # the fixture small.
    "swinv2_cosine_rmsnorm": (dict(ln_positions="swinv2", ln_type="rmsnorm", use_glu=False,
                                   activation_function="swish", use_cosine_attention=True, tau_init=0.1,
                                   use_head_scale=True, use_swin_position_embeddings=True, sinkhorn_iters=3,
                                   scale_embedding=True, image_length=8, decoder_layers=7, d_model=16,
                                   encoder_ffn_dim=32, decoder_ffn_dim=32), False, ("unscanned",)),
    # Magneto sub-LN with its init, biases, forced norm scales, no final encoder norm, dalle-mini's SmeLU.
    "subln_bias_smelu": (dict(ln_positions="subln", use_subln_init=True, use_bias=True, force_ln_scale=True,
                              use_final_ln_encoder=False, activation_function="smelu_dallemini"), False,
                         ("scanned", "unscanned")),
}


def sha256_of_dir(directory: str) -> dict[str, str]:
    """{file name: sha256 hex} of every file in `directory`."""
    out = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def dalle_text(input_ids: Any, attention_mask: Any) -> Any:
    """BART ids -> ours: <s>=0 and <pad>=1 swapped, padding 0 (what the exporter undoes on the embedding rows)."""
    import numpy as np

    swapped = np.where(input_ids == 0, 1, np.where(input_ids == 1, 0, input_ids))
    return (swapped * attention_mask).astype(np.int32)


def our_model_dir(directory: str, config: dict, params: dict, tokenizer: dict[str, bytes]) -> str:
    """Writes our model dir: params, config and (when given) the tokenizer files under `tokenizer/`."""
    from ml_collections import ConfigDict

    from dalle import model_dir as checkpoint

    checkpoint.save_model(directory, params, ConfigDict(config))
    if tokenizer:
        os.makedirs(os.path.join(directory, "tokenizer"), exist_ok=True)
        for name, data in tokenizer.items():
            with open(os.path.join(directory, "tokenizer", name), "wb") as f:
                f.write(data)
    return directory


def our_logits(model_directory: str, input_ids: Any, attention_mask: Any, decoder_input_ids: Any) -> Any:
    """Our full lm_head logits of the model saved in `model_directory` on BART-id inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dalle import model_dir as checkpoint
    from dalle.modeling import model as model_lib

    config, params = checkpoint.load_model(model_directory)
    model = model_lib.build_model(config.model)
    logits = jax.jit(model.full_logits)(params, jnp.asarray(dalle_text(input_ids, attention_mask)),
                                        jnp.asarray(decoder_input_ids))
    return np.asarray(logits, np.float32)


def _noisy_params(model: Any, cfg: Any, seed: int) -> dict:
    """Our init plus noise on every parameter, except per-layer norms that the placement never applies (training
    never moves them from their identity init, and dalle-mini's unscanned layout has no place for other values)."""
    import jax
    import numpy as np

    from dalle.modeling import norm_placement

    rs = np.random.RandomState(seed)
    params = jax.device_get(model.init(jax.random.PRNGKey(seed)))
    place = norm_placement.get(cfg.ln_positions)
    out: dict = {}
    for module in sorted(params):
        out[module] = {}
        for name in sorted(params[module]):
            value = np.asarray(params[module][name], np.float32)
            noise = rs.standard_normal(value.shape).astype(np.float32)
            value = value + (0.5 if "embed" in module else 0.1) * noise
            if module.endswith("layers/layer/output_norm"):
                side = "encoder" if "/encoder/" in module else "decoder"
                n = cfg.encoder_layers if side == "encoder" else cfg.decoder_layers
                unused = ~np.asarray(place.output_norm_layers(n), bool)
                value[unused] = np.asarray(params[module][name])[unused]
            out[module][name] = value
    return out


def _inputs(cfg: Any, seed: int, vocab: Any) -> dict[str, Any]:
    """BART-id text (one padded row, one full or cut), its mask, and decoder inputs (BOS + codes)."""
    import numpy as np

    rs = np.random.RandomState(1000 + seed)
    lt, li, codes = cfg.max_text_length, cfg.image_length, cfg.image_vocab_size
    input_ids = np.full((2, lt), 1, np.int32)  # BART <pad>
    mask = np.zeros((2, lt), np.int32)
    if vocab is not None:  # what dalle.data.tasks.encode_captions does, then back to BART ids
        for b, caption in enumerate(CAPTIONS):
            ours = list(vocab.encode(caption))[: lt - 1] + [vocab.eos_id]
            input_ids[b, : len(ours)] = dalle_text(np.asarray(ours), np.ones(len(ours), np.int32))
            mask[b, : len(ours)] = 1
    else:
        for b, n in enumerate((lt - 3, lt)):
            input_ids[b, :n] = np.concatenate([[0], rs.randint(4, cfg.encoder_vocab_size, n - 2), [2]])
            mask[b, :n] = 1
    decoder = np.concatenate([np.full((2, 1), codes, np.int32), rs.randint(0, codes, (2, li - 1))], axis=1)
    return {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": decoder.astype(np.int32)}


def _as_published(path: str) -> None:
    """Makes a tiny BPE's tokenizer.json read like dalle-mini's published one: merges as "a b" strings (tokenizers
    0.20+ writes [a, b] pairs, which dalle-mini's pinned tokenizers 0.13 cannot read; ours reads both) and BART's
    `<s> ... </s>` post-processor, which its processor relies on (our BpeVocabulary adds them itself)."""
    with open(path) as f:
        doc = json.load(f)
    doc["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    doc["post_processor"] = {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                             "trim_offsets": True, "add_prefix_space": False}
    with open(path, "w") as f:
        json.dump(doc, f, ensure_ascii=False)


def build_ours(name: str, work: str, seed: int) -> dict[str, Any]:
    """Half (a) for one layout: model dir, exports, their sha256, inputs; returns the fixture's arrays so far."""
    import numpy as np
    from ml_collections import ConfigDict

    from dalle import cli
    from dalle import model_dir as checkpoint
    from dalle.modeling import model as model_lib
    from dalle.tokenizers import bart_bpe

    overrides, with_tokenizer, variants = LAYOUTS[name]
    cfg = model_lib.complete_config(ConfigDict(dict(SMALL, **overrides)))
    model = model_lib.build_model(cfg)
    tokenizer: dict[str, bytes] = {}
    vocab = None
    data: dict[str, Any] = {"text_normalizer": "none"}
    if with_tokenizer:
        from tests.published_layouts import CAPTIONS as TRAINING_CAPTIONS

        folder = bart_bpe.train_tiny_bpe(TRAINING_CAPTIONS + CAPTIONS, os.path.join(work, name + "_tok"),
                                         vocab_size=cfg.encoder_vocab_size)
        _as_published(os.path.join(folder, "tokenizer.json"))
        for file_name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, file_name), "rb") as f:
                tokenizer[file_name] = f.read()
        vocab = bart_bpe.BpeVocabulary(folder)
        data["tokenizer_path"] = "tokenizer"
    config = {"model": cfg.to_dict(), "data": data}
    first = our_model_dir(os.path.join(work, name + "_first"), config, _noisy_params(model, cfg, seed), tokenizer)
    # What the fixture stores is what a model dir gives back, so the test rebuilds the very same dir.
    saved_config, params = checkpoint.load_model(first)
    params = {m: {p: np.asarray(v) for p, v in d.items()} for m, d in params.items()}
    ours = our_model_dir(os.path.join(work, name + "_ours"), json.loads(saved_config.to_json()), params, tokenizer)
    out: dict[str, Any] = {"config_json": np.array(saved_config.to_json()), **_inputs(cfg, seed, vocab)}
    for module, leaves in params.items():
        for p, value in leaves.items():
            out[f"param/{module}/{p}"] = value
    for file_name, data_bytes in tokenizer.items():
        out[f"tokenizer/{file_name}"] = np.frombuffer(data_bytes, np.uint8)
    if tokenizer:
        out["captions"] = np.array(json.dumps(CAPTIONS))
    out["our_logits"] = our_logits(ours, out["input_ids"], out["attention_mask"], out["decoder_input_ids"])
    for variant in variants:
        flags = VARIANTS[variant]
        exported = os.path.join(work, f"{name}_{variant}")
        if cli.main(["export", "dalle-mini", "--checkpoint", ours, "--out", exported, *flags]) != 0:
            raise RuntimeError(f"{name}: `dalle export dalle-mini {' '.join(flags)}` failed")
        out[f"{variant}/sha256"] = np.array(json.dumps(sha256_of_dir(exported), sort_keys=True))
    return out


# --------------------------------------------------------------------------------------------------------------
# Half (b): runs in the peer venv, imports nothing of ours.
# --------------------------------------------------------------------------------------------------------------
def peer(work: str, names: list[str]) -> None:
    """Loads every export in `work` with dalle-mini and writes its logits (and processor ids) beside it."""
    import importlib.metadata

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 imports the old name
    from flax.core.frozen_dict import unfreeze
    from flax.traverse_util import flatten_dict

    from dalle_mini import DalleBart, DalleBartProcessor

    versions = {p: importlib.metadata.version(p) for p in ("dalle-mini", "jax", "flax", "transformers")}
    for name in names:
        z = np.load(os.path.join(work, f"{name}_inputs.npz"))
        result: dict[str, Any] = {"versions": np.array(json.dumps(versions, sort_keys=True))}
        for variant in LAYOUTS[name][2]:
            exported = os.path.join(work, f"{name}_{variant}")
            model, params = DalleBart.from_pretrained(exported, _do_init=False, dtype=jnp.float32)
            have = {k: np.shape(v) for k, v in flatten_dict(unfreeze(params)).items()}
            want = {k: tuple(v.shape) for k, v in flatten_dict(unfreeze(model.params_shape_tree)).items()}
            if have != want:
                missing = sorted("/".join(k) for k in set(want) - set(have))
                unexpected = sorted("/".join(k) for k in set(have) - set(want))
                shapes = sorted("/".join(k) for k in set(have) & set(want) if have[k] != want[k])
                raise RuntimeError(f"{name} {variant}: dalle-mini's tree differs: missing {missing}, unexpected "
                                   f"{unexpected}, other shapes {shapes}")
            if bool(model.config.use_scan) != (variant == "scanned"):
                raise RuntimeError(f"{name} {variant}: config.json says use_scan={model.config.use_scan}")
            logits = model(input_ids=z["input_ids"], attention_mask=z["attention_mask"],
                           decoder_input_ids=z["decoder_input_ids"], params=params).logits
            result[f"{variant}/logits"] = np.asarray(logits, np.float32)
            if os.path.exists(os.path.join(exported, "tokenizer.json")):
                processor = DalleBartProcessor.from_pretrained(exported)
                encoded = processor(CAPTIONS)
                result[f"{variant}/processor_input_ids"] = np.asarray(encoded["input_ids"], np.int32)
                result[f"{variant}/processor_attention_mask"] = np.asarray(encoded["attention_mask"], np.int32)
        np.savez(os.path.join(work, f"{name}_dalle_mini.npz"), **result)
        print(f"dalle-mini loaded {name}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated layout names")
    parser.add_argument("--peer", default="", help=argparse.SUPPRESS)  # half (b): the work folder
    args = parser.parse_args()
    names = [n for n in LAYOUTS if not args.only or n in args.only.split(",")]
    if args.peer:
        peer(args.peer, names)
        return 0
    import numpy as np

    sys.path.insert(0, ROOT)  # tests.published_layouts
    with tempfile.TemporaryDirectory() as work:
        fixtures = {}
        for name in names:
            fixtures[name] = build_ours(name, work, seed=list(LAYOUTS).index(name))
            np.savez(os.path.join(work, f"{name}_inputs.npz"),
                     **{k: fixtures[name][k] for k in ("input_ids", "attention_mask", "decoder_input_ids")})
        subprocess.check_call([PEER_PYTHON, os.path.abspath(__file__), "--peer", work, "--only", ",".join(names)])
        for name, out in fixtures.items():
            theirs = dict(np.load(os.path.join(work, f"{name}_dalle_mini.npz")))
            ours = out.pop("our_logits")
            versions = json.loads(str(theirs.pop("versions")))
            out["dalle_mini_version"] = np.array(versions["dalle-mini"])
            out["peer_versions"] = np.array(json.dumps(versions, sort_keys=True))
            for variant in LAYOUTS[name][2]:
                diff = float(np.max(np.abs(ours - theirs[f"{variant}/logits"])))
                print(f"{name} {variant}: max |our logits - dalle-mini's| = {diff:.2e} "
                      f"(logits up to {float(np.max(np.abs(ours))):.1f})")
                if not diff <= TOLERANCE:
                    raise RuntimeError(f"{name} {variant}: dalle-mini's logits differ from ours by {diff}")
                key = f"{variant}/processor_input_ids"
                if key in theirs and not (np.array_equal(theirs[key], out["input_ids"]) and np.array_equal(
                        theirs[f"{variant}/processor_attention_mask"], out["attention_mask"])):
                    raise RuntimeError(f"{name}: dalle-mini's processor ids {theirs[key]} != ours {out['input_ids']}")
            out.update(theirs)
            path = os.path.join(OUT, f"export_check_{name}.npz")
            np.savez_compressed(path, **out)
            print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
