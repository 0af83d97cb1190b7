"""A whole tiny pipeline for end-to-end tests: shapes data, tokenizer, a random f4 VQGAN, encoded data, and a
text-to-image config over them (models random or trained a few steps by the tests)."""

from __future__ import annotations

import os

import jax
from ml_collections import ConfigDict

from dalle import model_dir as checkpoint
from dalle import config as config_lib
from tests import data_helpers

CODES = 64  # VQGAN codebook of the tiny pipeline


def tiny_vqgan(directory: str) -> str:
    """Saves a random-weight 32 px f4 VQGAN with CODES codes; returns its model dir."""
    from dalle.modeling.vqgan import model as vqgan

    cfg = config_lib.load_config("configs/vqgan_f4_32.py", [
        "--config.model.ch=16", "--config.model.norm_groups=8", "--config.model.ch_mult=(1,1,1)", "--config.model.z_channels=16",
        f"--config.model.n_embed={CODES}", "--config.model.embed_dim=8", "--config.model.attn_resolutions=()"])
    model = vqgan.VQGAN(vqgan.VQGANConfig.from_config(cfg.model))
    out = os.path.join(directory, "vqgan")
    checkpoint.save_model(out, model.init(jax.random.PRNGKey(0)), cfg)
    return out


def tiny_config(tmp_dir: str, kind: str = "decoder_only", **train) -> ConfigDict:
    """Shapes data encoded by a random VQGAN + a micro model of `kind` + a few-step train section."""
    from dalle.data import build, encode
    from dalle.tokenizers import sentencepiece as tokenizer
    from dalle.modeling.vqgan import api as vqgan_api

    config = data_helpers.shapes_config(tmp_dir)
    vq_dir = tiny_vqgan(tmp_dir)
    config.data.vqgan_checkpoint = vq_dir
    build.build_dataset(config.data)
    tokenizer.train_from_config(config.data)
    vq = vqgan_api.VQGANTokenizer.from_checkpoint(vq_dir)
    encode.run_encode(config, vq.encode, vqgan_config=checkpoint.read_config(vq_dir), codebook_size=CODES,
                      process_index=0, process_count=1, progress=False)
    c = ConfigDict(config.to_dict())
    if kind == "decoder_only":
        c.model = ConfigDict(dict(kind="decoder_only", d_model=32, num_layers=2, num_heads=2, ffn_dim=64,
                                  use_glu=False, text_vocab_size=64, image_vocab_size=CODES,
                                  max_text_length=c.data.max_text_length, image_length=64))
    else:
        c.model = ConfigDict(dict(kind="dalle_bart", d_model=32, encoder_layers=1, decoder_layers=2,
                                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                  decoder_ffn_dim=64, encoder_vocab_size=64, image_vocab_size=CODES,
                                  max_text_length=c.data.max_text_length, image_length=64))
    c.train = ConfigDict(dict(batch_size=8, num_steps=3, log_every=1, eval_every=0, checkpoint_every=100,
                              progress_bar=False, **train))
    c.train.schedule = ConfigDict(dict(warmup_steps=1))
    return config_lib.validate(c)
