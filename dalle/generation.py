"""Prompts -> images: tokenizer, text-to-image model, guided sampling, VQGAN decoder (and optional CLIP rerank).

Used by `dalle generate`, the web demo, the eval job and the trainer's sample summaries, so all of them tokenize
prompts exactly as training did (including the empty caption used for classifier-free guidance). Also the Python
API (`from dalle import Generator`):

    g = Generator.from_pretrained("weights/dalle_mini", dtype="bfloat16")
    images = g("a red apple", n=4, seed=0)  # uint8 [4, H, W, 3]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from dalle import paths, precision, sampling_schema


class GenerationError(ValueError):
    """A request that cannot be served; the message says what to change."""


@functools.lru_cache(maxsize=4)
def _vocab(path: str, unknown_words: str = "keep"):
    from dalle.tokenizers import sentencepiece as tokenizer

    return tokenizer.load_vocabulary(path, unknown_words)


@functools.lru_cache(maxsize=4)
def image_tokenizer(path: str, expected_kind: str = "", needed_by: str = ""):
    """The image tokenizer in `path`: a dalle model directory, or a vqgan-jax checkpoint (converted in memory);
    `expected_kind` (a config's data.image_tokenizer, or the kind what `needed_by` names works with; empty: any)
    must be its kind."""
    from dalle import kinds
    from dalle.modeling.vqgan import convert as vqgan_convert

    if vqgan_convert.is_vqgan_jax_dir(path):
        from dalle.modeling.vqgan.api import VQGANTokenizer

        kinds.check_image_tokenizer_kind(path, "vqgan", expected_kind, needed_by)
        params, config, _ = vqgan_convert.load_source(path)
        return VQGANTokenizer(params, config)
    return kinds.load_image_tokenizer(path, expected_kind, needed_by)


def check_prompt(i: int, prompt: Any, vocab: Any, options: Any) -> None:
    """Raises GenerationError naming prompt `i` (0-based) when it would reach the model as the empty caption - the
    unconditional prompt, images of nothing the user asked for: empty, emptied by the caption cleaner (control or
    zero-width characters, only a URL), or, with `data.unknown_words = drop`, no word the vocabulary knows."""
    from dalle.data import text

    if not isinstance(prompt, str) or not prompt.strip():
        raise GenerationError(f"prompt {i + 1} is empty; describe the image, e.g. 'a red circle'")
    cleaned = text.normalize_caption(prompt, options)
    if not cleaned.strip():
        raise GenerationError(f"prompt {i + 1} ({prompt[:40]!r}) has no words left after caption cleaning "
                              f"(only control or invisible characters, punctuation or a URL); describe the "
                              f"image, e.g. 'a red circle'")
    known = getattr(vocab, "known_text", None)  # a KnownWordsVocabulary (data.unknown_words = "drop")
    if known is not None and not known(cleaned):
        raise GenerationError(f"prompt {i + 1} ({prompt[:40]!r}) has no word the model's vocabulary knows, and "
                              f"its data.unknown_words = 'drop' leaves such words out: it would draw "
                              f"unconditionally; use the model's words, e.g. 'a red circle'")


@functools.lru_cache(maxsize=2)
def load_reranker(clip_dir: str, unknown_words: str | None = None) -> Callable[[str, np.ndarray], list[int]]:
    """(prompt, uint8 images) -> candidate indices best first, by the score of the CLIP in `clip_dir`
    (dalle/eval/rerank.py): how `dalle generate` and `Generator.__call__` keep the best candidates. `unknown_words`:
    the image model's `data.unknown_words`, so the CLIP reads a prompt as the model did (None: the CLIP's own)."""
    from dalle.eval import rerank
    from dalle.modeling.clip import model as clip

    model = clip.load_clip(clip_dir, unknown_words=unknown_words)

    def order(prompt: str, images: np.ndarray) -> list[int]:
        scores = rerank.candidate_scores(model, images, [prompt])
        return list(rerank.rerank_order(scores, scores.shape[1])[0])

    return order


@dataclasses.dataclass
class Prompts:
    tokens: np.ndarray  # int32 [P, max_text_length]
    truncated: list[int]  # indices of prompts cut to fit max_text_length


class Generator:
    """Holds a model, its params, its vocabulary and its VQGAN; compiled decode loops are cached per shape.

    `decode_kernels` ("auto" | "native" | "xla"): how decode steps run, a choice of the machine rather than the
    model (see `dalle.modeling.sampling.generate`; "auto" = the CPU kernels wherever they can run).
    `dtype` ("float32" | "bfloat16" | "float16"): the precision the text-to-image model's params are cast to and
    its sampling computes in (half the memory and, on accelerators, faster at 16 bits; the CPU kernels take
    float32 or bfloat16, not float16). The VQGAN always decodes in float32: it runs once per image, not once per
    token."""

    def __init__(self, config: ConfigDict, params: Any, vocab: Any, vqgan: Any, mesh: Any = None, *,
                 decode_kernels: str = "auto", dtype: str = "float32"):
        from dalle import sharding
        from dalle.modeling import model as model_lib
        from dalle.modeling import sampling

        if decode_kernels not in sampling.DECODE_KERNELS:
            raise GenerationError(f"decode kernels = {decode_kernels!r} must be one of {sampling.DECODE_KERNELS}")
        bad_dtype = precision.problem(dtype, "dtype")
        if bad_dtype:
            raise GenerationError(bad_dtype)
        if decode_kernels == "native" and dtype not in ("float32", "bfloat16"):
            raise GenerationError(f"the native decode kernels compute in float32 from float32 or bfloat16 weights, "
                                  f"not dtype = {dtype!r}: use decode kernels 'auto' or 'xla' with {dtype}")
        self.decode_kernels = decode_kernels
        self.dtype = dtype
        params = precision.cast(params, dtype)  # before sharding: each device then holds only its cast shard
        self.config = config
        self.model = model_lib.build_model(config.model)
        self.vocab = vocab
        self.vqgan = vqgan
        self.mesh = mesh
        self.rules = sharding.rules_from_config(config)  # the layout the model trained with
        self.rows_multiple = 1
        if mesh is not None:  # params sharded by the model's rules; prompt rows padded to the batch shards
            shardings = sharding.param_shardings(params, self.model.partition_rules, self.rules, mesh)
            params = sharding.shard_put(params, shardings)
            self.rows_multiple = sharding.batch_shards(mesh, self.rules)
        self.params = params
        if vqgan.codebook_size != self.model.image_vocab_size:
            raise GenerationError(f"the VQGAN has {vqgan.codebook_size} codes but model.image_vocab_size is "
                                  f"{self.model.image_vocab_size}: data.vqgan_checkpoint is not this model's VQGAN")
        if vqgan.tokens_per_side ** 2 != self.model.image_length:
            raise GenerationError(f"the VQGAN makes {vqgan.tokens_per_side}x{vqgan.tokens_per_side} tokens but "
                                  f"model.image_length is {self.model.image_length}")

    @classmethod
    def from_parts(cls, config: ConfigDict, params: Any, mesh: Any = None, tokenizer_path: str = "",
                   vqgan_checkpoint: str = "", *, decode_kernels: str = "auto",
                   dtype: str = "float32") -> "Generator":
        data = config.data
        vq_dir = vqgan_checkpoint or data.vqgan_checkpoint
        if mesh is not None:
            from dalle import kinds

            vqgan = kinds.load_image_tokenizer(vq_dir, data.get("image_tokenizer", ""), mesh=mesh)
        else:
            vqgan = image_tokenizer(vq_dir, data.get("image_tokenizer", ""))
        return cls(config, params, _vocab(tokenizer_path or data.tokenizer_path, data.get("unknown_words", "keep")),
                   vqgan, mesh,
                   decode_kernels=decode_kernels, dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", *, vqgan: str = "",
                        decode_kernels: str = "auto") -> "Generator":
        """The Python API's way in: `path` is a dalle model directory (`dalle convert ...` output or an exported
        training run), a trainer workdir (its exported model, else its latest checkpoint), or dalle-mini's
        published directory (config.json + flax_model.msgpack + tokenizer files). The last is converted in
        memory at every call, nothing written, with its VQGAN found as `dalle convert dalle-mini` finds it (a
        vqgan-jax checkpoint in a subfolder or beside it) unless `vqgan` names one; converting it once with
        `dalle convert dalle-mini --from DIR --out OUT` and loading OUT is faster. `dtype`: see the class."""
        from dalle.modeling import convert_dalle_mini as dalle_mini

        if not dalle_mini.is_dalle_mini_dir(path):
            return cls.from_checkpoint(path, vqgan_checkpoint=vqgan, decode_kernels=decode_kernels, dtype=dtype)
        try:
            converted = dalle_mini.load(path, vqgan, dtype=precision.check(dtype, "dtype"))
        except (dalle_mini.ConversionError, precision.PrecisionError) as e:
            raise GenerationError(f"{path}: {e}") from None
        data = converted.config.data
        return cls(converted.config, converted.params, _vocab(data.tokenizer_path),
                   image_tokenizer(data.vqgan_checkpoint), decode_kernels=decode_kernels, dtype=dtype)

    @classmethod
    def from_checkpoint(cls, directory: str, mesh: Any = None, tokenizer_path: str = "",
                        vqgan_checkpoint: str = "", *, decode_kernels: str = "auto",
                        dtype: str = "float32") -> "Generator":
        """A trained workdir (its exported model or latest checkpoint) or an exported/converted model dir."""
        from dalle import model_dir as checkpoint

        if not os.path.exists(directory):
            raise GenerationError(
                f"checkpoint {directory!r} does not exist. Make one with `make demo` (writes outputs/demo/...) or "
                f"`dalle train --config configs/shapes_tiny.py --workdir DIR`, or convert published weights with "
                f"`dalle convert dalle-mini --from DIR --out OUT`.")
        config, params = checkpoint.load_model(directory)
        home = checkpoint.exported_model_dir(directory) or directory  # where the config holding the paths is
        given = {"tokenizer_path": tokenizer_path, "vqgan_checkpoint": vqgan_checkpoint}
        for key in ("tokenizer_path", "vqgan_checkpoint"):
            if not given[key] and ("data" not in config or not config.data.get(key)):
                raise GenerationError(f"{directory}: its config has no data.{key}; it cannot turn prompts into "
                                      f"images")
            if not given[key]:  # the model's own paths: found from wherever the command runs
                config.data[key] = checkpoint.resolve_path(home, config.data[key])
        if "sampling" in config and config.sampling.get("clip_checkpoint"):
            config.sampling.clip_checkpoint = checkpoint.resolve_path(home, config.sampling.clip_checkpoint)
        if config.data.get("word_frequency_path"):  # dalle-mini's hashtag word list, also stored relative
            config.data.word_frequency_path = checkpoint.resolve_path(home, config.data.word_frequency_path)
        return cls.from_parts(config, params, mesh, tokenizer_path, vqgan_checkpoint, decode_kernels=decode_kernels,
                              dtype=dtype)

    # --- text ------------------------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> Prompts:
        from dalle.data import tasks, text

        if not prompts:
            raise GenerationError("no prompts given")
        options = text.options_from_config(self.config.data, for_prompts=True)
        for i, p in enumerate(prompts):
            check_prompt(i, p, self.vocab, options)
        length = self.model.max_text_length
        tokens = tasks.encode_captions(list(prompts), self.vocab, length, options)
        truncated = [i for i, p in enumerate(prompts)
                     if len(self.vocab.encode(text.normalize_caption(p, options))) > length - 1]
        for i in truncated:
            warnings.warn(f"prompt {i + 1} is longer than the model's {length - 1} text tokens and was truncated",
                          stacklevel=2)
        return Prompts(tokens, truncated)

    def unconditional(self, n: int) -> np.ndarray:
        """The empty caption, tokenized as training blanked captions (classifier-free guidance's other branch)."""
        from dalle.data import tasks, text

        blank = tasks.encode_captions([""], self.vocab, self.model.max_text_length,
                                      text.options_from_config(self.config.data, for_prompts=True))
        return np.repeat(blank, n, axis=0)

    # --- sampling --------------------------------------------------------------------------------------------
    @functools.cached_property
    def sampling(self) -> sampling_schema.Sampling:
        """The model's `sampling` section (schema defaults for model directories exported without one): what
        `codes` uses for every setting it is not given."""
        return sampling_schema.resolve(self.config)

    def settings(self, overrides: Mapping[str, Any] | None = None,
                 labels: Mapping[str, str] | None = None) -> sampling_schema.Sampling:
        """The model's sampling section with `overrides` (name -> value; None = the model's) applied and checked;
        SamplingError names where a bad value came from (a flag, via `labels`, or the model's section)."""
        return sampling_schema.resolve(self.config, overrides, labels)

    def codes(self, prompts: Sequence[str], *, num_images: int = 1, seed: int = 0,
              condition_scale: float | None = None, top_k: int | None = None, top_p: float | None = None,
              temperature: float | None = None, image_prompt: np.ndarray | None = None) -> np.ndarray:
        """int32 [len(prompts) * num_images, image_length], prompt-major. Settings left None are the model's
        (`self.sampling`). `image_prompt`: the first codes of every image, kept as given and the rest sampled
        after them (image completion; `completion_prompt` makes them from a picture): int [P] for all prompts,
        or [len(prompts), P]."""
        from dalle.modeling import sampling

        s = self.sampling
        condition_scale = s.guidance if condition_scale is None else condition_scale
        top_k = s.top_k if top_k is None else top_k
        top_p = s.top_p if top_p is None else top_p
        temperature = s.temperature if temperature is None else temperature
        _check_numbers(num_images, condition_scale, top_k, top_p, temperature, self.model.image_vocab_size)
        n = len(prompts)
        pad = (-n) % self.rows_multiple
        p = self.tokenize(list(prompts) + [prompts[-1]] * pad)
        if image_prompt is not None:
            image_prompt = self._check_image_prompt(image_prompt, n)
            image_prompt = np.concatenate([image_prompt, np.repeat(image_prompt[-1:], pad, axis=0)])
        rng = seed if isinstance(seed, jax.Array) else jax.random.PRNGKey(seed)
        kw = dict(num_images=num_images, condition_scale=condition_scale, top_k=top_k, top_p=top_p,
                  temperature=temperature, uncond_tokens=self.unconditional(n + pad),
                  decode_kernels=self.decode_kernels, compute_dtype=self.dtype, image_prompt=image_prompt)
        if self.mesh is None:
            out = sampling.generate(self.model, self.params, p.tokens, rng, **kw)
        else:
            from dalle import sharding

            with sharding.use_mesh(self.mesh, self.rules):
                out = sampling.generate(self.model, self.params, p.tokens, rng, **kw)
        return np.asarray(jax.device_get(out))[: n * num_images]

    def _check_image_prompt(self, image_prompt: Any, n: int) -> np.ndarray:
        codes = np.asarray(image_prompt)
        if not np.issubdtype(codes.dtype, np.integer):
            raise GenerationError(f"image prompt codes must be integers, got dtype {codes.dtype}")
        if codes.ndim == 1:
            codes = np.broadcast_to(codes, (n, codes.shape[0]))
        if codes.ndim != 2 or codes.shape[0] != n:
            raise GenerationError(f"image prompt must be [P] or [{n} prompts, P] codes, got shape {codes.shape}")
        if codes.shape[1] >= self.model.image_length:
            raise GenerationError(f"image prompt has {codes.shape[1]} codes; an image has {self.model.image_length}"
                                  f" and at least one must be left to sample")
        if codes.size and (codes.min() < 0 or codes.max() >= self.model.image_vocab_size):
            raise GenerationError(f"image prompt codes must be in [0, {self.model.image_vocab_size}), got values "
                                  f"in [{codes.min()}, {codes.max()}]")
        return codes.astype(np.int32)

    def completion_prompt(self, image: str | bytes | np.ndarray, keep_rows: int, *,
                          labels: tuple[str, str] = ("image prompt", "keep rows")) -> np.ndarray:
        """int32 [keep_rows * tokens_per_side]: the top `keep_rows` rows of the image tokenizer's codes of
        `image` (a path, encoded bytes or an array; cropped to its centered square and resized to the
        tokenizer's size), the image prompt that `codes` completes (DALL·E's image completion). `labels`: how
        errors name the image and the row count (CLI flags, API arguments)."""
        from dalle.data import images as images_lib

        side = self.vqgan.tokens_per_side
        if isinstance(keep_rows, bool) or not isinstance(keep_rows, int) or not 1 <= keep_rows < side:
            raise GenerationError(f"{labels[1]} = {keep_rows!r} must be between 1 and {side - 1} (this model's "
                                  f"images are {side} code rows; the rest are drawn)")
        try:
            pixels = images_lib.read_user_image(image, self.vqgan.image_size, labels[0])
        except ValueError as e:
            raise GenerationError(str(e)) from None
        codes = np.asarray(self.vqgan.encode(pixels[None])).reshape(-1)
        return codes[: keep_rows * side].astype(np.int32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3]."""
        images = self.vqgan.decode(np.asarray(codes))
        return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)

    def images(self, prompts: Sequence[str], **kw: Any) -> np.ndarray:
        return self.decode(self.codes(prompts, **kw))

    def __call__(self, prompt: str, n: int | None = None, seed: int = 0, *, condition_scale: float | None = None,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 clip: str | None = None, image: str | bytes | np.ndarray | None = None,
                 keep_rows: int | None = None) -> np.ndarray:
        """uint8 [n, H, W, 3]: `n` images of `prompt`, sampled as `dalle generate` samples it. Every setting left
        None is the model's `sampling` section: n = its `keep` (0 there: its `candidates`), guidance, temperature,
        top-k, top-p; and when the section (or `clip`) names a CLIP, the CLIP-best n of max(n, candidates) images
        (`clip=""`: no reranking). Image i is the same for every n (its randomness depends on seed and i only).
        `image` and `keep_rows`: image completion; the top `keep_rows` code rows of `image` are kept and the rest
        drawn to match the prompt."""
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be one string, got {type(prompt).__name__}; call once per prompt "
                                  f"(or use .images([...]) for a batch)")
        settings = self.settings({"guidance": condition_scale, "temperature": temperature, "top_k": top_k,
                                  "top_p": top_p, "clip_checkpoint": clip},
                                 {"guidance": "condition_scale", "clip_checkpoint": "clip"})
        keep = settings.kept if n is None else n
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise GenerationError(f"n = {n!r} must be a positive integer")
        if (image is None) != (keep_rows is None):
            raise GenerationError("image completion needs both image and keep_rows")
        prompt_codes = None if image is None else self.completion_prompt(image, keep_rows)
        clip_dir = sampling_schema.rerank_clip(settings, from_user=clip is not None)
        if not clip_dir:
            return self.images([prompt], num_images=keep, seed=seed, image_prompt=prompt_codes,
                               **settings.sampler_kwargs())
        images = self.images([prompt], num_images=max(keep, settings.candidates), seed=seed,
                             image_prompt=prompt_codes, **settings.sampler_kwargs())
        return images[load_reranker(clip_dir, self.config.data.get("unknown_words", "keep"))(prompt, images)[:keep]]


def _check_numbers(num_images, condition_scale, top_k, top_p, temperature, vocab) -> None:
    if not isinstance(num_images, int) or num_images < 1:
        raise GenerationError(f"number of images = {num_images!r} must be a positive integer")
    if not math.isfinite(condition_scale) or condition_scale < 0:
        raise GenerationError(f"condition scale = {condition_scale!r} must be a finite number >= 0")
    if not 0 <= top_k <= vocab:
        raise GenerationError(f"top-k = {top_k!r} must be between 0 (off) and the {vocab} image codes")
    if not 0 < top_p <= 1:
        raise GenerationError(f"top-p = {top_p!r} must be in (0, 1]")
    if not math.isfinite(temperature) or temperature < 0:
        raise GenerationError(f"temperature = {temperature!r} must be >= 0 (0 = greedy)")


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles uint8 [N, H, W, 3] into one uint8 image with `pad` pixels between tiles."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = max(1, min(cols or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, c), fill, np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_png(path: str, image: np.ndarray, scale: int = 1) -> None:
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.uint8))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    parent = os.path.dirname(path)
    if parent:
        paths.makedirs(parent)
    with paths.open_file(path, "wb") as f:
        img.save(f, format="PNG")
