"""Golden fixtures from the real dalle-mini package: random-weight DalleBart models, their inputs, logits and
greedy decodes, saved as small `.npz` files in tests/fixtures/ (read by tests/test_convert_dalle_mini.py).

dalle-mini 0.1.5 needs jax 0.4.13-era APIs (the PINS below), which clash with ours, so it runs in its own venv.
From the repo root:

    python tools/make_dalle_mini_fixtures.py --setup      # creates .venv-dallemini (a few minutes of pip)
    .venv-dallemini/bin/python tools/make_dalle_mini_fixtures.py

Each fixture holds: `config_json` (the dalle-mini config), `param/<flax path>` arrays (its own tree: scanned or
unscanned), `input_ids` / `attention_mask` (BART ids: <s>=0 <pad>=1 </s>=2), `decoder_input_ids` (BOS + codes),
`logits` (its full lm_head output) and, where its generate works, `greedy` (its `generate(do_sample=False)`
sequences without the leading BOS). Weights are dalle-mini's init plus noise on *every* parameter (norm scales and
biases too) so each switch changes the function; the lm_head columns of the non-code tokens are zeroed so its
greedy decode (over all columns) picks codes, as ours does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures")
VENV = os.path.join(ROOT, ".venv-dallemini")
PINS = ["jax==0.4.13", "jaxlib==0.4.13", "flax==0.6.11", "optax==0.2.1", "chex==0.1.82", "transformers==4.25.1",
        "tokenizers==0.13.3", "numpy==1.26.4", "scipy==1.12.0", "einops", "unidecode", "ftfy", "emoji", "pillow",
        "wandb"]

SMALL = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
             encoder_ffn_dim=48, decoder_ffn_dim=48, encoder_vocab_size=60, image_vocab_size=40, max_text_length=8,
             image_length=12, dropout=0.0, gradient_checkpointing=False)

# name -> (dalle-mini config overrides, its generate works with this config)
FIXTURES = {
    # config/mini's layout: NormFormer, GLU, LayerNorm, scanned layers, extra rows between codes and BOS
    # (its text vocabulary fits the tiny byte-level BPE the converter test trains, to generate from raw prompts)
    "normformer_glu_scan": (dict(use_scan=True, image_vocab_size=45, decoder_start_token_id=40, encoder_vocab_size=320,
                                 bos_token_id=41, pad_token_id=41, eos_token_id=41), True),
    # Swin v2: res-post-norm + every-6th-layer norm, unscanned, Swin bias, cosine attention, head scale, RMSNorm,
    # plain MLP with swish, Sinkhorn encoder attention, scaled embeddings. (Its generate cannot run the Swin bias on
    # one-token steps, and its init needs text and image lengths equal: logits only.)
    "swinv2_swin_cosine_unscanned": (dict(ln_positions="swinv2", use_scan=False, decoder_layers=7,
                                          use_swin_position_embeddings=True, use_cosine_attention=True, tau_init=0.1,
                                          use_head_scale=True, ln_type="rmsnorm", use_glu=False,
                                          activation_function="swish", sinkhorn_iters=3, scale_embedding=True,
                                          max_text_length=8, image_length=8), False),
    # Magneto sub-LN with its init, biases, forced norm scales, no final encoder norm, SmeLU (its decoder crashes
    # without a final norm: FlaxBartDecoder never sets final_ln = None)
    "subln_bias_smelu_scan": (dict(ln_positions="subln", use_subln_init=True, use_bias=True, force_ln_scale=True,
                                   use_final_ln_encoder=False, activation_function="smelu", use_scan=True), True),
    # DeepNet (post-LN with residual scaling), unscanned (last layer's output norm has no scale)
    "deepnet_postln_unscanned": (dict(ln_positions="deepnet", use_deepnet_scaling=True, use_scan=False), True),
    # CogView sandwich-LN with RMSNorm and GLU, scanned
    "cogview_rmsnorm_scan": (dict(ln_positions="cogview", ln_type="rmsnorm", use_scan=True), True),
}


def setup() -> None:
    if not os.path.isdir(VENV):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    pip = os.path.join(VENV, "bin", "pip")
    subprocess.check_call([pip, "install", "--no-deps", "dalle-mini==0.1.5"])
    subprocess.check_call([pip, "install", *PINS])


def _patch_decoder_final_ln(modeling) -> None:
    """dalle-mini 0.1.5's FlaxBartDecoder.setup never sets `final_ln = None` when it has no final norm (post-LN,
    or use_final_ln_decoder=False), so such models crash in __call__. Setting the missing attribute to None is what
    its encoder does and changes no math; without it post-LN/DeepNet could not be compared at all."""
    cls = modeling.FlaxBartDecoder
    if getattr(cls, "_dalle_patched", False):
        return
    original = cls.setup

    def setup(self):
        original(self)
        if not (self.config.use_final_ln_decoder and self.config.ln_positions != "postln"):
            self.final_ln = None

    cls.setup = setup
    cls._dalle_patched = True


def make(name: str, overrides: dict, with_generate: bool, seed: int) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini imports the old name
    from flax.traverse_util import flatten_dict
    from dalle_mini.model import DalleBart, DalleBartConfig
    from dalle_mini.model import modeling

    _patch_decoder_final_ln(modeling)

    kwargs = dict(SMALL, **overrides)
    config = DalleBartConfig(**kwargs)
    lt, li = config.max_text_length, config.image_length
    model = DalleBart(config, input_shape=(1, lt), seed=seed, dtype=jnp.float32)
    rs = np.random.RandomState(seed)
    flat = flatten_dict(jax.device_get(model.params), sep="/")
    codes = config.decoder_start_token_id
    for k, v in flat.items():
        v = np.asarray(v, np.float32)
        noise = rs.standard_normal(v.shape).astype(np.float32)
        flat[k] = v + (0.5 if "embed" in k else 0.1) * noise
    flat["lm_head/kernel"][:, codes:] = 0.0  # greedy over all columns then picks codes only
    params = {}
    for k, v in flat.items():  # unflatten
        node = params
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = jnp.asarray(v)

    batch = 2
    input_ids = np.full((batch, lt), 1, np.int32)  # BART <pad> = 1
    attention_mask = np.zeros((batch, lt), np.int32)
    for b, n in enumerate((lt - 3, lt)):  # one padded caption, one full-length one
        input_ids[b, :n] = np.concatenate([[0], rs.randint(4, config.encoder_vocab_size, n - 2), [2]])
        attention_mask[b, :n] = 1
    decoder_input_ids = np.concatenate(
        [np.full((batch, 1), codes, np.int32), rs.randint(0, codes, (batch, li - 1)).astype(np.int32)], axis=1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                   params=params).logits
    out = {
        "config_json": np.array(json.dumps(config.to_dict(), sort_keys=True, default=str)),
        "input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
        "logits": np.asarray(logits, np.float32),
    }
    if with_generate:
        seq = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False, params=params,
                             max_length=li + 1).sequences
        seq = np.asarray(seq)[:, 1:]
        if (seq >= codes).any():
            raise RuntimeError(f"{name}: dalle-mini's greedy decode picked a non-code token: {seq}")
        out["greedy"] = seq.astype(np.int32)
    for k, v in flat.items():
        out["param/" + k] = v
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"dalle_mini_{name}.npz")
    np.savez_compressed(path, **out)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help=f"create {VENV} with dalle-mini and its pins")
    parser.add_argument("--only", default="", help="comma-separated fixture names")
    args = parser.parse_args()
    if args.setup:
        setup()
        return 0
    names = [n for n in FIXTURES if not args.only or n in args.only.split(",")]
    for name in names:
        overrides, with_generate = FIXTURES[name]
        path = make(name, overrides, with_generate, seed=list(FIXTURES).index(name))
        print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
