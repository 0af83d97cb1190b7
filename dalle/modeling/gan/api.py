"""Prompts -> images with a trained text-conditional GAN: one generator pass per image, no image tokens.

    g = GANGenerator.from_checkpoint("outputs/demo/gan")      # a model dir or a trainer workdir
    images = g.images(["a red circle", "a blue square"], num_images=4, seed=0)  # uint8 [8, 32, 32, 3]
    images = g("a red circle", n=4, seed=0)                                   # uint8 [4, 32, 32, 3]

Prompts are tokenized exactly as training tokenized captions (dalle/modeling/gan/text.py). Image i of every prompt
uses the same noise (from seed and i only), so prompts compare on equal terms and image i does not change with
how many are drawn.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from dalle.generation import GenerationError
from dalle.modeling.gan import model as gan_lib
from dalle.modeling.gan.text import CaptionTokenizer

MAX_BATCH = 64  # rows per generator call; fewer rows are padded to a power of two (few distinct compiles)


class GANGenerator:
    def __init__(self, config: ConfigDict, params: Any, tokenizer: CaptionTokenizer):
        self.config = config
        self.gan = gan_lib.GAN(config.model)
        self.tokenizer = tokenizer
        _check_params(params, self.gan)
        self.params = params
        self._fn = jax.jit(self._generate)

    @classmethod
    def from_checkpoint(cls, directory: str, tokenizer_path: str = "") -> "GANGenerator":
        """An exported GAN model dir (`<workdir>/model`) or a GAN trainer workdir (its latest checkpoint when it
        has not exported yet). `tokenizer_path` overrides the model's data.tokenizer_path."""
        from dalle import model_dir

        if not directory or not os.path.exists(directory):
            raise GenerationError(f"GAN checkpoint {directory!r} does not exist; train one with `dalle train "
                                  f"--config configs/gan_shapes.py --workdir DIR`")
        config = model_dir.config_of(directory)
        kind = config.model.get("kind") if "model" in config else None
        if kind != "gan":
            raise GenerationError(f"{directory!r} holds a model of kind {kind!r}, not a text-conditional GAN "
                                  f"('gan')")
        config, params = model_dir.load_model(directory)
        if "gen_params" in params:  # a training state: the generator it would export
            params = {"text": params["text_params"], "generator": params.get("gen_ema", params["gen_params"])}
        if not tokenizer_path:
            path = config.data.get("tokenizer_path", "") if "data" in config else ""
            if not path:
                raise GenerationError(f"{directory}: its config has no data.tokenizer_path; it cannot turn prompts "
                                      f"into images (pass tokenizer_path)")
            home = model_dir.exported_model_dir(directory) or directory
            tokenizer_path = model_dir.resolve_path(home, path)
        if not os.path.exists(tokenizer_path):
            raise GenerationError(f"{directory}: tokenizer {tokenizer_path!r} does not exist")
        return cls(config, params, CaptionTokenizer.from_config(config, tokenizer_path))

    @property
    def image_size(self) -> int:
        return self.gan.cfg.image_size

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """int32 [len(prompts), context_length]; GenerationError for empty prompts."""
        return self.tokenizer.prompts(prompts)

    def _generate(self, params: Any, tokens: jax.Array, z: jax.Array) -> jax.Array:
        s = self.gan.encode_text(params["text"], tokens)
        return gan_lib.to_uint8(self.gan.generate(params["generator"], z, s))

    def images(self, prompts: Sequence[str], num_images: int = 1, seed: int = 0) -> np.ndarray:
        """uint8 [len(prompts) * num_images, S, S, 3], prompt-major (all images of prompt 0 first)."""
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise GenerationError(f"number of images = {num_images!r} must be a positive integer")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise GenerationError(f"seed = {seed!r} must be an integer")
        tokens = np.repeat(self.tokenize(prompts), num_images, axis=0)
        z = np.tile(gan_lib.noise(int(seed), range(num_images), self.gan.cfg.z_dim), (len(prompts), 1))
        out = []
        for start in range(0, len(tokens), MAX_BATCH):
            t, zz = tokens[start:start + MAX_BATCH], z[start:start + MAX_BATCH]
            rows = len(t)
            padded = min(MAX_BATCH, 1 << (rows - 1).bit_length())
            if padded > rows:
                t = np.concatenate([t, np.repeat(t[-1:], padded - rows, axis=0)])
                zz = np.concatenate([zz, np.repeat(zz[-1:], padded - rows, axis=0)])
            out.append(np.asarray(self._fn(self.params, t, zz))[:rows])
        return np.concatenate(out)

    def __call__(self, prompt: str, n: int | None = None, seed: int = 0) -> np.ndarray:
        """uint8 [n, S, S, 3]: `n` images of `prompt` (None: 1)."""
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be one string, got {type(prompt).__name__}; call once per prompt "
                                  f"(or use .images([...]) for a batch)")
        return self.images([prompt], num_images=1 if n is None else n, seed=seed)


def _check_params(params: Any, gan: gan_lib.GAN) -> None:
    """The params must be this architecture's {"text", "generator"}: a clear error instead of a shape failure
    deep inside jit."""
    if not isinstance(params, dict) or not {"text", "generator"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise GenerationError(f"GAN params must hold 'text' and 'generator', got {got}")
    expected = jax.eval_shape(gan.init, jax.random.PRNGKey(0))
    for part in ("text", "generator"):
        want = jax.tree_util.tree_map(lambda a: tuple(a.shape), expected[part])
        have = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), params[part])
        if want != have:
            raise GenerationError(f"the {part} params do not match the config's architecture (model section): "
                                  f"the checkpoint and its config.json disagree")
