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


def tiny_dvae(directory: str) -> str:
    """Saves a random-weight 32 px dVAE (3 groups: 8x8 codes) with CODES codes; returns its model dir."""
    from dalle.modeling.dvae import model as dvae

    cfg = config_lib.load_config("configs/dvae_shapes.py", [
        "--config.model.n_hid=8", "--config.model.n_init=8", f"--config.model.vocab_size={CODES}"])
    model = dvae.DVAE(dvae.DVAEConfig.from_config(cfg))
    out = os.path.join(directory, "dvae")
    checkpoint.save_model(out, model.init(jax.random.PRNGKey(0)), cfg)
    return out


IMAGE_TOKENIZERS = {"vqgan": tiny_vqgan, "dvae": tiny_dvae}


def tiny_config(tmp_dir: str, kind: str = "decoder_only", image_tokenizer: str = "vqgan", **train) -> ConfigDict:
    """Shapes data encoded by a random image tokenizer (VQGAN or dVAE, both 8x8 codes) + a micro model of `kind` +
    a few-step train section."""
    from dalle import kinds
    from dalle.data import build, encode
    from dalle.tokenizers import sentencepiece as tokenizer

    config = data_helpers.shapes_config(tmp_dir)
    vq_dir = IMAGE_TOKENIZERS[image_tokenizer](tmp_dir)
    config.data.vqgan_checkpoint = vq_dir
    config.data.image_tokenizer = image_tokenizer
    build.build_dataset(config.data)
    tokenizer.train_from_config(config.data)
    vq = kinds.load_image_tokenizer(vq_dir)
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
