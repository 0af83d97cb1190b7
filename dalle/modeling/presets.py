"""Model presets (the `model` section only), for training configs and tests to start from.

    from dalle.modeling import presets
    config.model = presets.mini()

Light module (no jax import). Sizes follow dalle-mini's `tools/train/config/*/config.json`; vocabulary sizes follow
its published checkpoints (`image_vocab_size` here = VQGAN codes; dalle-mini's extra rows in `image_extra_tokens`).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle.modeling import schema


def _dalle_mini_sizes(c: ConfigDict) -> ConfigDict:
    """What every dalle-mini config shares: 16384 VQGAN f16 codes, 64 text tokens, 16x16 = 256 image tokens."""
    c.image_vocab_size = 16384
    c.max_text_length = 64
    c.image_length = 256
    return c


def mini() -> ConfigDict:
    """dalle-mini `config/mini`: d 1024, 12+12 layers, 16 heads, GLU ffn 4096, NormFormer; 538.6 M params."""
    c = _dalle_mini_sizes(schema.dalle_bart_defaults())
    c.d_model = 1024
    c.encoder_layers = c.decoder_layers = 12
    c.encoder_attention_heads = c.decoder_attention_heads = 16
    c.encoder_ffn_dim = c.decoder_ffn_dim = 4096
    c.encoder_vocab_size = 50264
    c.image_extra_tokens = 7  # dalle-mini image_vocab_size 16391
    return c


def mini_glu() -> ConfigDict:
    """dalle-mini `config/mini_glu`: as mini with GLU ffn 2730 and vocabularies 50300 / 16400; 437.9 M params."""
    c = mini()
    c.encoder_ffn_dim = c.decoder_ffn_dim = 2730
    c.encoder_vocab_size = 50300
    c.image_extra_tokens = 16
    return c


def mega() -> ConfigDict:
    """dalle-mini `config/mega`: d 2048, 24+24 layers, 32 heads, GLU ffn 4096; ~2.6 B params."""
    c = _dalle_mini_sizes(schema.dalle_bart_defaults())
    c.d_model = 2048
    c.encoder_layers = c.decoder_layers = 24
    c.encoder_attention_heads = c.decoder_attention_heads = 32
    c.encoder_ffn_dim = c.decoder_ffn_dim = 4096
    c.encoder_vocab_size = 50272
    c.image_extra_tokens = 31  # dalle-mini image_vocab_size 16415
    c.init_std = 0.01
    return c


def tiny(text_vocab_size: int = 1000, image_vocab_size: int = 1024, max_text_length: int = 64,
         image_length: int = 256) -> ConfigDict:
    """A CPU-sized DalleBart (d 256, 2+2 layers, 4 heads, ffn 1024): ~5.6 M params, quick to time against dalle-mini."""
    c = schema.dalle_bart_defaults()
    c.d_model = 256
    c.encoder_layers = c.decoder_layers = 2
    c.encoder_attention_heads = c.decoder_attention_heads = 4
    c.encoder_ffn_dim = c.decoder_ffn_dim = 1024
    c.encoder_vocab_size = text_vocab_size
    c.image_vocab_size = image_vocab_size
    c.max_text_length = max_text_length
    c.image_length = image_length
    return c


def tiny_decoder_only(text_vocab_size: int = 64, image_vocab_size: int = 512, max_text_length: int = 16,
                      image_length: int = 64) -> ConfigDict:
    """The size a throwaway shapes-world prototype found learnable on 2 CPU cores in minutes: d 128, 4 layers,
    4 heads (~0.9 M params), pre-LN (measured accuracy of the model built on it: EVAL.md)."""
    c = schema.decoder_only_defaults()
    c.d_model = 128
    c.num_layers = 4
    c.num_heads = 4
    c.ffn_dim = 512
    c.use_glu = False
    c.text_vocab_size = text_vocab_size
    c.image_vocab_size = image_vocab_size
    c.max_text_length = max_text_length
    c.image_length = image_length
    return c


def micro(**sizes) -> ConfigDict:
    """A few-second test model (d 32, 2+2 layers, 2 heads), any switch can be set on the result."""
    c = tiny(**{"text_vocab_size": 50, "image_vocab_size": 40, "max_text_length": 8, "image_length": 12, **sizes})
    c.d_model = 32
    c.encoder_attention_heads = c.decoder_attention_heads = 2
    c.encoder_ffn_dim = c.decoder_ffn_dim = 48
    return c
