"""CLIP-guided VQGAN generation ("VQGAN+CLIP"): images drawn by optimising a VQGAN's latents, no text-to-image model.

The method of Crowson et al., "VQGAN-CLIP: Open Domain Image Generation and Editing with Natural Language
Guidance" (2022, arXiv:2204.08583): a grid of continuous latents in the codebook's space is quantized to its
nearest codebook vectors in the forward pass (straight-through: the gradient skips the rounding), decoded by the
VQGAN, cut into random crops that CLIP embeds, and moved by Adam to lower the squared great-circle distance between
those embeddings and the prompt's. Starting from random codes ("noise") or from the VQGAN encoding of an init image.

    cg = ClipGuided.from_dirs("outputs/demo/vqgan/model", "outputs/demo/clip/model")
    result = cg.generate(["a red circle"], num_images=4, seed=0, steps=50)  # .images uint8 [4, H, W, 3]

Settings come from dalle/clip_guided_schema.py (defaults, a VQGAN config's `clip_guided` section, overrides). One
jitted step updates every image of every prompt at once (prompt-major); each image's loss is its own term of a sum
and Adam is elementwise, so images do not influence each other. The step runs on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle import precision
from dalle.clip_guided_schema import ClipGuidedError, ClipGuidedSettings, resolve
from dalle.modeling.vqgan import model as vqgan_lib


@dataclasses.dataclass
class ClipGuidedResult:
    """What `ClipGuided.generate` drew, with the settings it drew with (for the record next to the images)."""

    images: np.ndarray  # uint8 [P * N, H, W, 3], prompt-major: the VQGAN's decoding of `codes`
    similarities: np.ndarray  # float32 [P * N]: cosine of each image with its prompt, CLIP's own preprocessing
    codes: np.ndarray  # int32 [P * N, h, w]: the codebook entries the images are decoded from
    settings: ClipGuidedSettings


# ----------------------------------------------------------------------------------------------------------------
# Pure functions: quantize, decode, cut out, score
# ----------------------------------------------------------------------------------------------------------------
class Codebook(NamedTuple):
    """The codebook as the optimisation sees it (a pytree: passed into the jitted step as an argument)."""

    vectors: jax.Array  # [K, d] in the space codes are matched in (unit length for l2_norm_codes VQGANs)
    std: jax.Array  # [d]: per-dimension spread, the unit the latents are optimised in
    lo: jax.Array  # [d]: per-dimension minimum
    hi: jax.Array  # [d]: per-dimension maximum


def codebook(params: vqgan_lib.Params, cfg: vqgan_lib.VQGANConfig) -> Codebook:
    e = jnp.asarray(params["quantize"]["embeddings"], jnp.float32)
    if cfg.l2_norm_codes:
        e = vqgan_lib.l2_normalize(e)
    std = jnp.maximum(jnp.std(e, axis=0), 1e-12)  # a constant dimension must not divide by zero
    return Codebook(e, std, jnp.min(e, axis=0), jnp.max(e, axis=0))


def quantize(z: jax.Array, book: Codebook, l2_norm_codes: bool) -> tuple[jax.Array, jax.Array]:
    """(z_q, codes): nearest codebook vectors of z [..., d], straight-through. The forward value is exactly the
    codebook vector (q + (z - z) rather than z + (q - z), which rounds), the gradient the identity to z."""
    if l2_norm_codes:
        z = vqgan_lib.l2_normalize(z)
    codes = vqgan_lib.nearest_codes(z, book.vectors)
    q = jnp.take(book.vectors, codes, axis=0)
    return q + (z - jax.lax.stop_gradient(z)), codes


def _decoder(cfg: vqgan_lib.VQGANConfig, dtype: Any) -> Callable[[Any, jax.Array], jax.Array]:
    """(params, z_q [B, h, w, d]) -> images [B, H, W, 3] in [-1, 1] (unclipped): the VQGAN's post-quant conv and
    decoder, named as in the VQGAN's param tree."""

    def fn(z_q: jax.Array) -> jax.Array:
        h = vqgan_lib.Conv(cfg.z_channels, 1, dtype=dtype, name="post_quant_conv")(z_q)
        return vqgan_lib.Decoder(cfg, dtype, name="decoder")(h)[0]

    apply = hk.without_apply_rng(hk.transform(fn)).apply
    return lambda params, z_q: apply({k: v for k, v in params.items() if k.split("/")[0] in
                                      ("decoder", "post_quant_conv")}, z_q)


@jax.custom_vjp
def clamp_unit(x: jax.Array) -> jax.Array:
    """clip(x, 0, 1) whose gradient still flows where it would move a clipped pixel back into range (a plain
    clip would freeze every saturated pixel of a random start)."""
    return jnp.clip(x, 0.0, 1.0)


def _clamp_fwd(x: jax.Array):
    return jnp.clip(x, 0.0, 1.0), x


def _clamp_bwd(x: jax.Array, g: jax.Array):
    inward = ((x >= 0.0) & (x <= 1.0)) | ((x < 0.0) & (g < 0.0)) | ((x > 1.0) & (g > 0.0))
    return (jnp.where(inward, g, 0.0),)


clamp_unit.defvjp(_clamp_fwd, _clamp_bwd)


def render(params: vqgan_lib.Params, z: jax.Array, book: Codebook, cfg: vqgan_lib.VQGANConfig,
           dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
    """(images [B, H, W, 3] in [0, 1], codes [B, h, w]): what the latents z [B, h, w, d] look like, always decoded
    from codebook vectors."""
    z_q, codes = quantize(z, book, cfg.l2_norm_codes)
    images = _decoder(cfg, dtype)(params, z_q).astype(jnp.float32)
    return clamp_unit((images + 1.0) / 2.0), codes


def make_cutouts(key: jax.Array, image: jax.Array, s: ClipGuidedSettings, out_size: int) -> jax.Array:
    """[cutouts, out_size, out_size, 3] random square crops of one image [H, W, 3], resized (bilinear, antialiased
    when shrinking) to CLIP's input, mirrored with probability `flip`, with Gaussian noise of a random strength."""
    k_size, k_x, k_y, k_flip, k_sigma, k_noise = jax.random.split(key, 6)
    n = s.cutouts
    h, w = image.shape[0], image.shape[1]
    frac = s.cut_min + (s.cut_max - s.cut_min) * jax.random.uniform(k_size, (n,)) ** s.cut_pow
    side = frac * min(h, w)
    top = jax.random.uniform(k_y, (n,)) * (h - side)
    left = jax.random.uniform(k_x, (n,)) * (w - side)

    def crop(side: jax.Array, top: jax.Array, left: jax.Array) -> jax.Array:
        scale = out_size / side
        return jax.image.scale_and_translate(image, (out_size, out_size, image.shape[2]), (0, 1),
                                             jnp.stack([scale, scale]), jnp.stack([-top * scale, -left * scale]),
                                             "linear", antialias=True)

    cuts = jax.vmap(crop)(side, top, left)
    flip = jax.random.bernoulli(k_flip, s.flip, (n,))
    cuts = jnp.where(flip[:, None, None, None], cuts[:, :, ::-1], cuts)
    sigma = s.noise * jax.random.uniform(k_sigma, (n, 1, 1, 1))
    return cuts + sigma * jax.random.normal(k_noise, cuts.shape)


def spherical_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """Squared great-circle distance between unit vectors, 2 arcsin(|a - b| / 2)^2 (Crowson et al.): unlike
    1 - cos it keeps a useful gradient when the two are already close."""
    d = jnp.linalg.norm(a - b, axis=-1)
    return 2.0 * jnp.square(jnp.arcsin(jnp.clip(d / 2.0, 0.0, 1.0)))


@functools.partial(jax.jit, static_argnums=(2,))
def random_latents(keys: jax.Array, book: Codebook, grid: int, init_noise: float) -> jax.Array:
    """[B, grid, grid, d]: uniformly random codebook vectors per image key, plus `init_noise` codebook stds of
    Gaussian noise (the "noise" start: already a valid image, unlike pure noise, which decodes to mush)."""

    def one(key: jax.Array) -> jax.Array:
        k_codes, k_noise = jax.random.split(key)
        codes = jax.random.randint(k_codes, (grid, grid), 0, book.vectors.shape[0])
        z = jnp.take(book.vectors, codes, axis=0)
        return z + init_noise * book.std * jax.random.normal(k_noise, z.shape)

    return jax.vmap(one)(keys)


def image_keys(seed: int, num_prompts: int, num_images: int) -> tuple[jax.Array, jax.Array]:
    """(start keys, step keys), each [num_prompts * num_images] prompt-major: image i of prompt p draws from
    (seed, p, i) only, so it is the same image whatever the batch holds besides it."""
    p = jnp.repeat(jnp.arange(num_prompts), num_images)
    i = jnp.tile(jnp.arange(num_images), num_prompts)
    root = jax.random.PRNGKey(seed)
    keys = jax.vmap(lambda a, b: jax.random.fold_in(jax.random.fold_in(root, a), b))(p, i)
    pairs = jax.vmap(jax.random.split)(keys)
    return pairs[:, 0], pairs[:, 1]


# ----------------------------------------------------------------------------------------------------------------
# The optimisation step
# ----------------------------------------------------------------------------------------------------------------
class State(NamedTuple):
    """What one step carries to the next."""

    u: jax.Array  # latents in codebook-std units [B, h, w, d]
    opt: Any  # Adam's state
    step: jax.Array  # int32 scalar


@dataclasses.dataclass(frozen=True)
class _Problem:
    """What the jitted step is specialised on (hashable)."""

    cfg: vqgan_lib.VQGANConfig
    dtype: Any
    settings: ClipGuidedSettings
    clip_size: int


def _optimizer(s: ClipGuidedSettings) -> optax.GradientTransformation:
    return optax.adam(s.lr)


def _loss(u: jax.Array, u0: jax.Array, keys: jax.Array, text: jax.Array, vq_params: Any, clip_params: Any,
          book: Codebook, problem: _Problem, clip_model: Any) -> tuple[jax.Array, jax.Array]:
    """(summed per-image loss, per-image mean cutout cosine with the prompt)."""
    s = problem.settings
    images, _ = render(vq_params, u * book.std, book, problem.cfg, problem.dtype)
    cuts = jax.vmap(lambda k, im: make_cutouts(k, im, s, problem.clip_size))(keys, images)
    b = cuts.shape[0]
    flat = clip_model.normalize_device(cuts.reshape((-1,) + cuts.shape[2:]))
    emb = clip_model.encode_image(clip_params, flat.astype(jax.tree_util.tree_leaves(clip_params)[0].dtype))
    emb = emb.astype(jnp.float32)
    emb = (emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)).reshape(b, s.cutouts, -1)
    per_image = spherical_distance(emb, text[:, None, :]).mean(axis=1)
    if s.init_weight:
        per_image = per_image + s.init_weight * jnp.mean(jnp.square(u - u0), axis=(1, 2, 3))
    cosine = jnp.einsum("bcd,bd->bc", emb, text).mean(axis=1)
    return per_image.sum(), cosine


def step(state: State, u0: jax.Array, lo: jax.Array, hi: jax.Array, keys: jax.Array, text: jax.Array,
         vq_params: Any, clip_params: Any, book: Codebook, problem: _Problem,
         clip_model: Any) -> tuple[State, jax.Array]:
    """One Adam step on every image's latents; (new state, per-image mean cutout cosine before the step). Keys
    [B] are per image; the step index is folded in, so step t of image i sees the same cutouts in any batch."""
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, state.step))(keys)
    grads, cosine = jax.grad(_loss, has_aux=True)(state.u, u0, step_keys, text, vq_params, clip_params, book,
                                                  problem, clip_model)
    updates, opt = _optimizer(problem.settings).update(grads, state.opt, state.u)
    # Projected onto the codebook's box (widened to hold the start): a latent past every code still rounds to the
    # same code, and Adam's momentum would carry it further out, from where it comes back only slowly.
    u = jnp.clip(optax.apply_updates(state.u, updates), lo, hi)
    return State(u, opt, state.step + 1), cosine


# ----------------------------------------------------------------------------------------------------------------
# The generator
# ----------------------------------------------------------------------------------------------------------------
class ClipGuided:
    """A VQGAN and a CLIP that draw images of prompts by CLIP-guided latent optimisation.

    `vqgan`: a `dalle.modeling.vqgan.api.VQGANTokenizer` (its encoder reads init images, its decoder writes the
    results); `clip`: a `dalle.modeling.clip.model.LoadedCLIP`. Their resolutions need not match: cutouts are
    resized to CLIP's. `dtype` ("float32" | "bfloat16" | "float16"): the precision the VQGAN decoder and the CLIP
    image tower compute in during optimisation (latents, Adam and the final decode stay float32). `config`: where
    a `clip_guided` section is read from (default: the VQGAN's own config)."""

    def __init__(self, vqgan: Any, clip: Any, *, dtype: str = "float32", config: Any = None):
        from dalle.modeling.vqgan.api import VQGANTokenizer

        if not isinstance(vqgan, VQGANTokenizer):
            raise ClipGuidedError(f"CLIP-guided generation optimises a VQGAN's latents; got an image tokenizer of "
                                  f"type {type(vqgan).__name__}")
        bad = precision.problem(dtype, "dtype")
        if bad:
            raise ClipGuidedError(bad)
        if vqgan.cfg.out_ch != 3:
            raise ClipGuidedError(f"the VQGAN draws {vqgan.cfg.out_ch} channels; CLIP scores RGB images (3)")
        self.vqgan = vqgan
        self.clip = clip
        self.dtype = dtype
        self.config = vqgan.config if config is None else config
        self.cfg = vqgan.cfg
        self._device = jax.devices()[0]
        self._vq_params = jax.device_put(vqgan.params, self._device)
        self._clip_params = jax.device_put(precision.cast(clip.params, dtype), self._device)
        self._book = codebook(self._vq_params, self.cfg)
        self._steps: dict[_Problem, Callable] = {}
        # The encoder's continuous output (the whole forward pass: it runs once per init image).
        self._encode = jax.jit(lambda p, x: vqgan_lib.VQGAN(self.cfg).apply(p, x).z_e)

    @classmethod
    def from_dirs(cls, vqgan_dir: str, clip_dir: str, *, dtype: str = "float32") -> "ClipGuided":
        """A VQGAN model directory (`dalle convert vqgan`, a VQGAN training export, or a vqgan-jax checkpoint)
        and a CLIP model directory (`dalle convert clip`, a CLIP training export), loaded as `dalle generate`
        loads them."""
        from dalle import generation
        from dalle.modeling.clip import model as clip_lib

        if not vqgan_dir or not os.path.isdir(vqgan_dir):
            raise FileNotFoundError(f"VQGAN checkpoint {vqgan_dir!r} does not exist: make one with `dalle convert "
                                    f"vqgan` or `dalle train --config configs/vqgan_f4_32.py`")
        # It optimises VQGAN latents: a directory of another tokenizer kind (a dVAE's) is refused by name.
        tok = generation.image_tokenizer(vqgan_dir, "vqgan", needed_by="CLIP-guided generation")
        return cls(tok, clip_lib.load_clip(clip_dir), dtype=dtype)

    # --- facts ------------------------------------------------------------------------------------------------
    def settings(self, overrides: Mapping[str, Any] | None = None,
                 labels: Mapping[str, str] | None = None) -> ClipGuidedSettings:
        """The `clip_guided` section of `self.config` (schema defaults where absent) with `overrides` applied
        (None = keep) and checked; errors name a bad value's origin (`labels`: override -> flag name)."""
        return resolve(self.config, overrides, labels)

    def image_size(self, s: ClipGuidedSettings) -> int:
        size = s.size or self.vqgan.image_size
        f = self.vqgan.downsample_factor
        if size % f:
            raise ClipGuidedError(f"clip_guided.size = {size} is not a multiple of the VQGAN's downsampling "
                                  f"factor {f}")
        return size

    # --- pieces ---------------------------------------------------------------------------------------------
    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 [P, D] CLIP text embeddings; empty or non-text prompts are refused."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise ClipGuidedError("prompts must be a non-empty list of strings, e.g. ['a red circle']")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise ClipGuidedError(f"prompt {i + 1} is empty; describe the image, e.g. 'a red circle'")
        return np.asarray(self.clip.embed_texts(list(prompts)), np.float32)

    def start_latents(self, keys: jax.Array, size: int, s: ClipGuidedSettings, init_image: Any = None) -> jax.Array:
        """Latents [B, h, w, d] to start from: the VQGAN encoding of `init_image` (a path, encoded bytes or an
        array; cropped to its centered square and resized to `size`) for every image, else random codebook
        vectors plus `init_noise` codebook stds of Gaussian noise, drawn from each image's key."""
        if init_image is not None:
            from dalle.data import images as images_lib

            try:
                pixels = images_lib.read_user_image(init_image, size, "init image")
            except ValueError as e:
                raise ClipGuidedError(str(e)) from None
            x = jnp.asarray(self.vqgan.preprocess(pixels[None]))
            z = self._encode(self._vq_params, x).astype(jnp.float32)
            if self.cfg.l2_norm_codes:
                z = vqgan_lib.l2_normalize(z)
            return jnp.broadcast_to(z, (keys.shape[0],) + z.shape[1:])

        return random_latents(keys, self._book, size // self.vqgan.downsample_factor, s.init_noise)

    def _step_fn(self, problem: _Problem) -> Callable:
        if problem not in self._steps:
            self._steps[problem] = jax.jit(functools.partial(step, problem=problem, clip_model=self.clip.model))
        return self._steps[problem]

    # --- API ----------------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], *, num_images: int = 1, seed: int = 0, init_image: Any = None,
                 progress: bool = True, labels: Mapping[str, str] | None = None,
                 **overrides: Any) -> ClipGuidedResult:
        """`num_images` images of every prompt, prompt-major. `overrides`: any `clip_guided` setting (steps, lr,
        cutouts, cut_min, cut_max, cut_pow, flip, noise, init_noise, init_weight, size; None = the config's).
        Image i of prompt p depends on (seed, p, i) only. `progress`: a tqdm bar on stderr."""
        s = self.settings(overrides, labels)
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ClipGuidedError(f"number of images = {num_images!r} must be a positive integer")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ClipGuidedError(f"seed = {seed!r} must be an integer >= 0")
        text = self.text_embeddings(prompts)
        size = self.image_size(s)
        init_keys, step_keys = image_keys(seed, len(prompts), num_images)
        u = self.start_latents(init_keys, size, s, init_image) / self._book.std
        u0 = u
        lo = jnp.minimum(self._book.lo / self._book.std, u0)
        hi = jnp.maximum(self._book.hi / self._book.std, u0)
        text_rows = jnp.asarray(np.repeat(text, num_images, axis=0))
        state = State(u, _optimizer(s).init(u), jnp.zeros((), jnp.int32))
        # Placed as the step's outputs will be: otherwise its second call compiles again for the first one's outputs.
        state, u0, lo, hi, step_keys, text_rows = jax.device_put((state, u0, lo, hi, step_keys, text_rows),
                                                                 self._device)
        # Keyed on what the step computes with only: another step count or start reuses the compiled step.
        step_settings = dataclasses.replace(s, steps=0, init_noise=0.0, size=0)
        problem = _Problem(self.cfg, precision.jnp_dtype(self.dtype), step_settings, self.clip.model.cfg.image_size)
        fn = self._step_fn(problem)
        bar = _progress(s.steps, progress)
        try:
            for t in range(s.steps):
                state, cosine = fn(state, u0, lo, hi, step_keys, text_rows, self._vq_params, self._clip_params,
                                   self._book)
                if bar is not None:
                    bar.update(1)
                    if t % max(1, s.steps // 20) == 0 or t == s.steps - 1:
                        bar.set_postfix({"cutout_cos": f"{float(jnp.mean(cosine)):.4f}"}, refresh=False)
        finally:
            if bar is not None:
                bar.close()
        _, codes = quantize(state.u * self._book.std, self._book, self.cfg.l2_norm_codes)
        codes = np.asarray(jax.device_get(codes), np.int32)
        images = self.vqgan.decode(codes)
        images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
        sims = np.sum(np.asarray(self.clip.embed_images(images), np.float32) * np.asarray(text_rows), axis=-1)
        return ClipGuidedResult(images, sims.astype(np.float32), codes, s)

    def images(self, prompts: Sequence[str], **kw: Any) -> np.ndarray:
        """uint8 [len(prompts) * num_images, H, W, 3]; the keywords of `generate`."""
        return self.generate(prompts, **kw).images


def _progress(total: int, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="clip-guided", unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
