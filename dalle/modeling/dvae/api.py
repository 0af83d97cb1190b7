"""`DVAETokenizer`: images <-> dVAE codes, with the interface of dalle.modeling.vqgan.api.VQGANTokenizer, so the
pre-encoding job, generation and evaluation take either (dalle.kinds.load_image_tokenizer picks by model kind).

Inputs are uint8 images in [0, 255] or float images in [0, 1], [B, H, W, C] with H and W divisible by the
downsampling factor. Codes are the argmax of the encoder's logits (no Gumbel noise: how DALL·E tokenizes images for
its transformer); decoded images are the decoder's logit-Laplace locations, squashed and unmapped. Work is
jit-compiled once per input shape and batch-sharded over the mesh axes the logical rules map `batch` to; params are
laid out by the rules the dVAE's config carries. The batch is padded up to a multiple of the batch shards and the
padding dropped again. With several processes each one passes and gets back its own rows.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from dalle import sharding
from dalle import model_dir as checkpoint
from dalle.modeling.dvae import model as dvae_lib


class DVAETokenizer:
    """Encode images to int32 codes [B, h, w] and decode codes back to float32 images [B, H, W, C] in [0, 1]."""

    def __init__(self, params: dvae_lib.Params, config: Any, mesh: Mesh | None = None,
                 dtype: Any = jnp.float32, rules: sharding.LogicalRules | None = None):
        """`rules` default to the ones `config` (the dVAE's own, as exported by training) names, then the
        defaults: params are laid out as they were in training."""
        self.cfg = dvae_lib.DVAEConfig.from_config(config)
        dvae_lib.check_params(params, self.cfg)
        self.config = config
        self.model = dvae_lib.DVAE(self.cfg, dtype)
        self.mesh = mesh if mesh is not None else sharding.make_mesh(("data",), (-1,))
        self.rules = tuple(rules) if rules is not None else sharding.rules_from_config(config)
        shardings = sharding.param_shardings(params, sharding.get_partition_rules("dvae"), self.rules, self.mesh)
        self.params = sharding.shard_put(params, shardings)
        self._encode = jax.jit(self.model.encode, in_shardings=(shardings, self._batch(4)),
                               out_shardings=self._batch(3))
        self._decode = jax.jit(self.model.decode_codes, in_shardings=(shardings, self._batch(3)),
                               out_shardings=self._batch(4))

    @classmethod
    def from_checkpoint(cls, directory: str, mesh: Mesh | None = None, dtype: Any = jnp.float32,
                        rules: sharding.LogicalRules | None = None) -> "DVAETokenizer":
        """Loads a dalle model directory (`dalle convert dvae` output, an exported dVAE training run, or a
        trainer workdir's latest checkpoint)."""
        config, params = checkpoint.load_model(directory)
        kind = config.get("model", {}).get("kind") if "model" in config else None
        if kind != "dvae":
            raise checkpoint.CheckpointError(f"{directory!r} holds a model of kind {kind!r}, not a dVAE")
        return cls(params, config, mesh=mesh, dtype=dtype, rules=rules)

    # --- facts ------------------------------------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        return self.cfg.downsample_factor

    @property
    def codebook_size(self) -> int:
        return self.cfg.vocab_size

    @property
    def image_size(self) -> int:
        """The side the model was configured (and usually trained) for; other multiples of the factor work."""
        return self.cfg.resolution

    @property
    def tokens_per_side(self) -> int:
        return self.cfg.token_grid

    # --- sharding helpers ---------------------------------------------------------------------------------------
    def _batch(self, ndim: int) -> NamedSharding:
        return sharding.batch_sharding(self.mesh, ndim, self.rules)

    def _run(self, fn, x: np.ndarray) -> np.ndarray:
        return sharding.run_on_rows(fn, self.params, x, self.mesh, self.rules)

    # --- API ----------------------------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> np.ndarray:
        """Checks shape/dtype/range and returns float32 images in [0, 1] (map_pixels is the model's first step)."""
        x = np.asarray(images)
        c_in = self.cfg.input_channels
        if x.ndim != 4:
            raise ValueError(f"images must be [batch, height, width, {c_in}], got shape {x.shape}")
        _, h, w, c = x.shape
        if c != c_in:
            raise ValueError(f"images have {c} channels (shape {x.shape}); this dVAE takes {c_in}")
        f = self.downsample_factor
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"image size {h}x{w} is not divisible by the dVAE downsampling factor {f}")
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float32)
            if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
                raise ValueError(f"float images must be in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}] "
                                 "(pass uint8 for [0, 255])")
            return np.clip(x, 0.0, 1.0)
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {x.dtype}")

    def encode(self, images: Any) -> np.ndarray:
        """[B, H, W, C] uint8 or float in [0, 1] -> int32 codes [B, H/f, W/f]."""
        x = self.preprocess(images)
        f = self.downsample_factor
        if x.shape[0] == 0:
            return np.zeros((0, x.shape[1] // f, x.shape[2] // f), np.int32)
        return self._run(self._encode, x).astype(np.int32)

    def decode(self, codes: Any) -> np.ndarray:
        """int codes [B, h, w] (or flat [B, h*w] for a square grid) -> float32 images [B, h*f, w*f, C] in [0, 1]."""
        c = np.asarray(codes)
        if not np.issubdtype(c.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {c.dtype}")
        if c.ndim == 2:
            side = math.isqrt(c.shape[1])
            if side * side != c.shape[1]:
                raise ValueError(f"flat codes [B, n] need a square n, got n = {c.shape[1]}; pass [B, h, w]")
            c = c.reshape(c.shape[0], side, side)
        if c.ndim != 3:
            raise ValueError(f"codes must be [batch, h, w] or [batch, h*w], got shape {c.shape}")
        if c.size and (c.min() < 0 or c.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size}), got values in [{c.min()}, {c.max()}]")
        f = self.downsample_factor
        if c.shape[0] == 0 or c.shape[1] == 0 or c.shape[2] == 0:
            return np.zeros((c.shape[0], c.shape[1] * f, c.shape[2] * f, self.cfg.output_channels), np.float32)
        return self._run(self._decode, c.astype(np.int32)).astype(np.float32)

    decode_codes = decode  # the name dalle.kinds.ImageTokenizer documents

    def reconstruct(self, images: Any) -> np.ndarray:
        """decode(encode(images)), for round-trip checks."""
        return self.decode(self.encode(images))
