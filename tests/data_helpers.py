"""Small datasets for the data-pipeline tests (tokenizer, tasks, pipeline, encode): built once per test module."""

from __future__ import annotations

import os

import numpy as np
from ml_collections import ConfigDict

from dalle import config as config_lib

SHAPES_SIZES = {"train_size": 48, "validation_size": 12, "zero_shot_size": 6}


def shapes_config(tmp_dir: str, **data_overrides) -> ConfigDict:
    """A validated config for a tiny 32 px captioned-shapes dataset under tmp_dir."""
    data = {"source": "shapes", "image_size": 32, "data_dir": os.path.join(tmp_dir, "tfds"),
            "tokenizer_path": os.path.join(tmp_dir, "tok", "shapes.model"), "vocab_size": 64,
            "encoded_dir": os.path.join(tmp_dir, "encoded"), "examples_per_shard": 20, "encode_batch_size": 8,
            "max_text_length": 12, "shuffle_buffer": 64, **SHAPES_SIZES, **data_overrides}
    return config_lib.validate(ConfigDict({"data": data}))


def fake_encoder(images: np.ndarray) -> np.ndarray:
    """A stand-in VQGAN (f4, 64 codes): the code of each 4x4 patch from its mean colour; deterministic."""
    b, h, w, _ = images.shape
    x = images.reshape(b, h // 4, 4, w // 4, 4, 3).astype(np.float32).mean(axis=(2, 4))
    return ((x[..., 0] // 64) * 16 + (x[..., 1] // 64) * 4 + (x[..., 2] // 64)).astype(np.int32)


FAKE_VQGAN_CONFIG = ConfigDict({"model": {"kind": "fake", "factor": 4, "n_embed": 64}})


def build_tokenized_encoded_shapes(tmp_dir: str, **data_overrides) -> ConfigDict:
    """Shapes dataset + sentencepiece model + fake-encoded shards; returns the config."""
    from dalle.data import build, encode
    from dalle.tokenizers import sentencepiece as tokenizer

    config = shapes_config(tmp_dir, **data_overrides)
    build.build_dataset(config.data)
    tokenizer.train_from_config(config.data)
    encode.run_encode(config, fake_encoder, vqgan_config=FAKE_VQGAN_CONFIG, codebook_size=64,
                      process_index=0, process_count=1, progress=False)
    return config
