"""CLIP (OpenAI's architecture) in Haiku: ViT image tower, causal text transformer, projections, logit scale.

Why our own: the eval job reranks and scores with CLIP on the same mesh as the generator, and the shapes world
needs a CLIP trained from scratch through the one trainer (`dalle train --config configs/clip_shapes.py`).
Published weights come in with `dalle convert clip --from <OpenAI or open_clip state dict>` (convert_clip.py);
tests/test_clip.py proves embeddings equal open_clip's within 1e-4 on random weights.

Layout (names mirror OpenAI's state dict so the converter is a table):
  visual/conv1 (patch embedding, no bias), visual/class_embedding, visual/positional_embedding, visual/ln_pre,
  visual/layer_{i}/{ln_1, attn/in_proj, attn/out_proj, ln_2, mlp/c_fc, mlp/c_proj}, visual/ln_post, visual/proj;
  text/token_embedding, text/positional_embedding, text/layer_{i}/..., text/ln_final, text/text_projection;
  logit_scale.

    model = CLIP(config.model)                      # a `model` section with kind "clip"
    params = model.init(jax.random.PRNGKey(0))
    img = model.encode_image(params, model.preprocess(images_uint8))   # [B, embed_dim], not normalized
    txt = model.encode_text(params, tokens)                           # tokens int32 [B, context_length]
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from dalle import sharding

Params = Any

# OpenAI CLIP's image normalization (also open_clip's default).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = math.log(100.0)  # OpenAI clamps exp(logit_scale) at 100 during training


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Architecture of one CLIP; `from_config` reads a `model` section of kind "clip" (dalle/modeling/clip/schema.py)."""

    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp_dim: int = 2048
    activation: str = "quick_gelu"  # OpenAI: quick_gelu; open_clip's non-"-quickgelu" models: gelu (exact erf)
    text_pool: str = "argmax"  # argmax (OpenAI BPE: EOT has the largest id) | eos (first `eos_id`)
    eos_id: int = -1
    ln_eps: float = 1e-5
    init_logit_scale: float = math.log(1 / 0.07)
    image_mean: tuple[float, float, float] = OPENAI_MEAN
    image_std: tuple[float, float, float] = OPENAI_STD

    @classmethod
    def from_config(cls, m: Mapping[str, Any]) -> "CLIPConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: m[k] for k in fields if k in m}
        for k in ("image_mean", "image_std"):
            if k in kwargs:
                kwargs[k] = tuple(float(v) for v in kwargs[k])
        return cls(**kwargs)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"model.activation = {name!r} is not 'quick_gelu' or 'gelu'")


def _layer_norm(name: str, eps: float) -> hk.LayerNorm:
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=eps, name=name)


def _block(x: jax.Array, width: int, heads: int, mlp_dim: int, mask: jax.Array | None, act, eps: float,
           name: str) -> jax.Array:
    """Pre-LN residual block exactly as OpenAI's ResidualAttentionBlock (nn.MultiheadAttention, fused qkv)."""
    with hk.experimental.name_scope(name):
        b, length, _ = x.shape
        head_dim = width // heads
        h = _layer_norm("ln_1", eps)(x)
        with hk.experimental.name_scope("attn"):
            qkv = hk.Linear(3 * width, name="in_proj")(h)
            q, k, v = jnp.split(qkv, 3, axis=-1)
            q, k, v = (t.reshape(b, length, heads, head_dim) for t in (q, k, v))
            q = sharding.constrain(q, ("batch", "length", "heads", "kv"))
            logits = jnp.einsum("bqhd,bkhd->bhqk", q * (head_dim ** -0.5), k)
            if mask is not None:
                logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
            weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
            out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, width)
            x = x + hk.Linear(width, name="out_proj")(out)
        h = _layer_norm("ln_2", eps)(x)
        with hk.experimental.name_scope("mlp"):
            h = act(hk.Linear(mlp_dim, name="c_fc")(h))
            h = sharding.constrain(h, ("batch", "length", "mlp"))
            x = x + hk.Linear(width, name="c_proj")(h)
        return sharding.constrain(x, ("batch", "length", "embed"))


def _encode_image(cfg: CLIPConfig, images: jax.Array) -> jax.Array:
    """images: float [B, image_size, image_size, 3], already normalized (mean/std) -> [B, embed_dim]."""
    if images.shape[1] != cfg.image_size or images.shape[2] != cfg.image_size:
        raise ValueError(f"CLIP expects {cfg.image_size}x{cfg.image_size} images, got {images.shape[1:3]}; "
                         "call CLIP.preprocess first")
    act = _activation(cfg.activation)
    w = cfg.vision_width
    with hk.experimental.name_scope("visual"):
        x = hk.Conv2D(w, kernel_shape=cfg.patch_size, stride=cfg.patch_size, padding="VALID", with_bias=False,
                      name="conv1")(images)
        b = x.shape[0]
        x = x.reshape(b, -1, w)
        init = hk.initializers.RandomNormal(w ** -0.5)
        cls = hk.get_parameter("class_embedding", [w], x.dtype, init)
        pos = hk.get_parameter("positional_embedding", [cfg.grid * cfg.grid + 1, w], x.dtype, init)
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, w)).astype(x.dtype), x], axis=1) + pos
        x = _layer_norm("ln_pre", cfg.ln_eps)(x)
        for i in range(cfg.vision_layers):
            x = _block(x, w, cfg.vision_heads, cfg.vision_mlp_dim, None, act, cfg.ln_eps, f"layer_{i}")
        x = _layer_norm("ln_post", cfg.ln_eps)(x[:, 0])
        proj = hk.get_parameter("proj", [w, cfg.embed_dim], x.dtype, init)
        return x @ proj


def _encode_text(cfg: CLIPConfig, tokens: jax.Array) -> jax.Array:
    """tokens: int32 [B, context_length] -> [B, embed_dim] (features at the EOT/EOS position)."""
    if tokens.shape[1] != cfg.context_length:
        raise ValueError(f"CLIP text takes {cfg.context_length} tokens, got {tokens.shape[1]}")
    act = _activation(cfg.activation)
    w = cfg.text_width
    with hk.experimental.name_scope("text"):
        emb = hk.get_parameter("token_embedding", [cfg.vocab_size, w], jnp.float32,
                               hk.initializers.RandomNormal(0.02))
        pos = hk.get_parameter("positional_embedding", [cfg.context_length, w], jnp.float32,
                               hk.initializers.RandomNormal(0.01))
        x = jnp.take(emb, tokens, axis=0) + pos
        length = cfg.context_length
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
        for i in range(cfg.text_layers):
            x = _block(x, w, cfg.text_heads, cfg.text_mlp_dim, causal, act, cfg.ln_eps, f"layer_{i}")
        x = _layer_norm("ln_final", cfg.ln_eps)(x)
        idx = pool_index(tokens, cfg.text_pool, cfg.eos_id)
        x = jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
        proj = hk.get_parameter("text_projection", [w, cfg.embed_dim], x.dtype,
                                hk.initializers.RandomNormal(w ** -0.5))
        return x @ proj


def pool_index(tokens: jax.Array, pool: str, eos_id: int) -> jax.Array:
    """Position whose features represent the caption: OpenAI's argmax of ids, or the first `eos_id` (our
    sentencepiece vocabularies put EOS at id 1, so argmax would pick an ordinary word)."""
    if pool == "argmax":
        return jnp.argmax(tokens, axis=-1)
    if pool == "eos":
        if eos_id < 0:
            raise ValueError("model.text_pool = 'eos' needs model.eos_id >= 0")
        return jnp.argmax(tokens == eos_id, axis=-1)
    raise ValueError(f"model.text_pool = {pool!r} is not 'argmax' or 'eos'")


def _logit_scale(cfg: CLIPConfig) -> jax.Array:
    return hk.get_parameter("logit_scale", [], jnp.float32, hk.initializers.Constant(cfg.init_logit_scale))


def param_rules() -> tuple[tuple[str, tuple], ...]:
    """Regex over `module/param` -> logical axes (dalle.sharding); registered under kind "clip"."""
    return (
        (r"attn/in_proj/w$", ("embed", "heads")),
        (r"attn/in_proj/b$", ("heads",)),
        (r"attn/out_proj/w$", ("heads", "embed")),
        (r"mlp/c_fc/w$", ("embed", "mlp")),
        (r"mlp/c_fc/b$", ("mlp",)),
        (r"mlp/c_proj/w$", ("mlp", "embed")),
        (r"(out_proj|c_proj)/b$", (None,)),
        (r"token_embedding$", ("vocab", "embed")),
        (r"positional_embedding$", (None, "embed")),
        (r"class_embedding$", ("embed",)),
        (r"conv1/w$", (None, None, None, "embed")),
        (r"(ln_\w+|ln_final)/(scale|offset)$", ("norm",)),
        (r"(visual/proj|text_projection)$", ("embed", None)),
        (r"logit_scale$", ()),
    )


sharding.register_partition_rules("clip", param_rules())


def contrastive_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> tuple[jax.Array, dict]:
    """Symmetric InfoNCE over the (global) batch: pair i is the positive, every other row a negative."""
    img = image_emb / jnp.linalg.norm(image_emb, axis=-1, keepdims=True)
    txt = text_emb / jnp.linalg.norm(text_emb, axis=-1, keepdims=True)
    scale = jnp.exp(jnp.minimum(logit_scale, MAX_LOGIT_SCALE))
    logits = scale * img @ txt.T
    labels = jnp.arange(logits.shape[0])
    li = -jnp.mean(jax.nn.log_softmax(logits, axis=1)[labels, labels])
    lt = -jnp.mean(jax.nn.log_softmax(logits, axis=0)[labels, labels])
    acc_i = jnp.mean((jnp.argmax(logits, axis=1) == labels).astype(jnp.float32))
    acc_t = jnp.mean((jnp.argmax(logits, axis=0) == labels).astype(jnp.float32))
    return (li + lt) / 2, {"image_to_text_acc": acc_i, "text_to_image_acc": acc_t, "logit_scale": scale}


class CLIP:
    """Pure functions over CLIP params (Haiku transforms), plus host-side preprocessing."""

    def __init__(self, model_config: Mapping[str, Any] | CLIPConfig):
        self.cfg = model_config if isinstance(model_config, CLIPConfig) else CLIPConfig.from_config(model_config)
        cfg = self.cfg
        for tower, width, heads in (("vision", cfg.vision_width, cfg.vision_heads),
                                    ("text", cfg.text_width, cfg.text_heads)):
            if width % heads:
                raise ValueError(f"model.{tower}_width = {width} is not divisible by model.{tower}_heads = {heads}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"model.image_size = {cfg.image_size} is not divisible by patch_size {cfg.patch_size}")

        def all_fn(images, tokens):
            return _encode_image(cfg, images), _encode_text(cfg, tokens), _logit_scale(cfg)

        self._all = hk.without_apply_rng(hk.transform(all_fn))
        self._image = hk.without_apply_rng(hk.transform(lambda images: _encode_image(cfg, images)))
        self._text = hk.without_apply_rng(hk.transform(lambda tokens: _encode_text(cfg, tokens)))
        self._init_jit = jax.jit(self._init)
        self._encode_image_jit = jax.jit(self.encode_image)
        self._encode_text_jit = jax.jit(self.encode_text)

    # --- params --------------------------------------------------------------------------------------------
    def init(self, rng: jax.Array) -> Params:
        """Fresh params; jitted (eager Haiku init compiles every random draw separately: ~10x slower on CPU)."""
        return self._init_jit(rng)

    def _init(self, rng: jax.Array) -> Params:
        c = self.cfg
        return self._all.init(rng, jnp.zeros((1, c.image_size, c.image_size, 3), jnp.float32),
                              jnp.zeros((1, c.context_length), jnp.int32))

    @staticmethod
    def _tower(params: Params, prefix: str) -> Params:
        return {k: v for k, v in params.items() if k.startswith(prefix)}

    # --- forward ---------------------------------------------------------------------------------------------
    def encode_image(self, params: Params, images: jax.Array) -> jax.Array:
        """Normalized float images [B, S, S, 3] (see `preprocess`) -> unnormalized embeddings [B, embed_dim]."""
        return self._image.apply(self._tower(params, "visual"), images)

    def encode_text(self, params: Params, tokens: jax.Array) -> jax.Array:
        return self._text.apply(self._tower(params, "text"), tokens)

    def __call__(self, params: Params, images: jax.Array, tokens: jax.Array):
        """(image_emb, text_emb, logit_scale) in one pass, for training."""
        return self._all.apply(params, images, tokens)

    def logits_per_image(self, params: Params, images: jax.Array, tokens: jax.Array) -> jax.Array:
        """exp(logit_scale) * cos(image_i, text_j): [B_images, B_texts] (OpenAI's `logits_per_image`)."""
        img, txt, scale = self(params, images, tokens)
        return jnp.exp(scale) * normalize(img) @ normalize(txt).T

    def loss(self, params: Params, images: jax.Array, tokens: jax.Array) -> tuple[jax.Array, dict]:
        return contrastive_loss(*self(params, images, tokens))

    # --- host-side helpers --------------------------------------------------------------------------------
    def normalize_device(self, images: jax.Array) -> jax.Array:
        """Inside jit: uint8 or [0, 1] float [B, H, W, 3] of any square size -> normalized model input (bicubic
        resize on device when the size differs; host-side `preprocess` uses PIL and is what eval uses)."""
        x = images.astype(jnp.float32)
        if images.dtype == jnp.uint8:
            x = x / 255.0
        s = self.cfg.image_size
        if x.shape[1] != s or x.shape[2] != s:
            x = jnp.clip(jax.image.resize(x, (x.shape[0], s, s, 3), "bicubic"), 0.0, 1.0)
        return (x - jnp.asarray(self.cfg.image_mean)) / jnp.asarray(self.cfg.image_std)

    def preprocess(self, images: Any) -> np.ndarray:
        """uint8 [0, 255] or float [0, 1] images [B, H, W, 3] -> normalized float32 [B, S, S, 3]: PIL bicubic
        resize of the shorter side to S, center crop (OpenAI's transform), then mean/std."""
        x = to_uint8(images)
        s = self.cfg.image_size
        out = np.empty((x.shape[0], s, s, 3), np.float32)
        for i, im in enumerate(x):
            out[i] = resize_center_crop(im, s).astype(np.float32) / 255.0
        return (out - np.asarray(self.cfg.image_mean, np.float32)) / np.asarray(self.cfg.image_std, np.float32)

    def embed_images(self, params: Params, images: Any, batch_size: int = 64) -> np.ndarray:
        """Host images -> L2-normalized float32 embeddings, in batches (padded to a fixed shape: one compile)."""
        x = self.preprocess(images)
        return _batched(lambda b: self._encode_image_jit(params, b), x, batch_size)

    def embed_tokens(self, params: Params, tokens: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return _batched(lambda b: self._encode_text_jit(params, b), np.asarray(tokens, np.int32), batch_size)


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    outs = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start:start + batch_size]
        n = chunk.shape[0]
        if n < batch_size and x.shape[0] > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)], axis=0)
        outs.append(np.asarray(fn(chunk), np.float32)[:n])
    if not outs:
        return np.zeros((0, 0), np.float32)
    e = np.concatenate(outs, axis=0)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


def normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def to_uint8(images: Any) -> np.ndarray:
    """uint8 images as they are; float images must be in [0, 1] (rounded, as a PNG would store them)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [batch, height, width, 3], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"float images must be in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """PIL bicubic resize of the shorter side to `size`, then a center crop: OpenAI CLIP's transform."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = Image.fromarray(image).resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.asarray(im)[top:top + size, left:left + size]


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers and loading
# ----------------------------------------------------------------------------------------------------------------
def make_tokenizer(model_config: Mapping[str, Any], fallback_path: str = "",
                   unknown_words: str = "keep") -> Callable[[Sequence[str]], np.ndarray]:
    """captions -> int32 [N, context_length] for this CLIP (sentencepiece: exactly the DALL·E data tokenization,
    unknown words read as its data section's `unknown_words` says)."""
    path = model_config.get("tokenizer_path", "") or fallback_path
    length = int(model_config["context_length"])
    if model_config.get("tokenizer", "sentencepiece") == "openai_bpe":
        from dalle.tokenizers.clip_bpe import OpenAIBPETokenizer

        return OpenAIBPETokenizer(path, length)
    from dalle.data import tasks
    from dalle.tokenizers import sentencepiece as tokenizer

    vocab = tokenizer.load_vocabulary(path, unknown_words)
    return lambda captions: tasks.encode_captions(list(captions), vocab, length)


@dataclasses.dataclass
class LoadedCLIP:
    """A CLIP ready to score: model, params, tokenizer and the backbone name every number is reported with."""

    model: CLIP
    params: Params
    tokenize: Callable[[Sequence[str]], np.ndarray]
    backbone: str

    def embed_images(self, images: Any) -> np.ndarray:
        return self.model.embed_images(self.params, images)

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        return self.model.embed_tokens(self.params, self.tokenize(captions))


def resolve_eos(model_config: Any, eos_id: int) -> Any:
    """With `text_pool = "eos"` and `eos_id = -1`, the tokenizer's EOS id (sentencepiece: 1) is filled in."""
    if model_config.get("text_pool") == "eos" and int(model_config.get("eos_id", -1)) < 0:
        model_config = dict(model_config)
        model_config["eos_id"] = int(eos_id)
    return model_config


def load_clip(directory: str, tokenizer_path: str = "", unknown_words: str | None = None) -> LoadedCLIP:
    """A CLIP model directory (`dalle convert clip` or the export of a CLIP training run). `tokenizer_path`
    is used when the checkpoint names none (sentencepiece CLIPs trained on our data use data.tokenizer_path);
    `unknown_words` (the `data.unknown_words` of the image model it ranks for, so both read a prompt alike) overrides
    the CLIP's own setting (None: its saved data section's, else "keep")."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.clip import schema

    if not directory or not os.path.isdir(directory):
        raise FileNotFoundError(f"CLIP checkpoint {directory!r} does not exist (eval.clip_checkpoint): make one with "
                                "`dalle convert clip` or `dalle train --config configs/clip_shapes.py`")
    config, params = checkpoint.load_model(directory)
    m = config.get("model") if "model" in config else None
    if m is None or m.get("kind") != "clip":
        raise checkpoint.CheckpointError(f"{directory!r} holds a model of kind "
                                         f"{None if m is None else m.get('kind')!r}, not clip")
    if not m.get("tokenizer_path") and "data" in config and config.data.get("tokenizer_path"):
        tokenizer_path = tokenizer_path or checkpoint.resolve_path(directory, config.data.tokenizer_path)
    from dalle.tokenizers.sentencepiece import EOS_ID

    mc = resolve_eos(m.to_dict(), EOS_ID)
    if mc.get("tokenizer_path"):
        mc["tokenizer_path"] = checkpoint.resolve_path(directory, mc["tokenizer_path"])
    if unknown_words is None:
        unknown_words = config.data.get("unknown_words", "keep") if "data" in config else "keep"
    return LoadedCLIP(CLIP(mc), params, make_tokenizer(mc, tokenizer_path, unknown_words),
                      schema.backbone_name(schema.complete_clip_config(ConfigDict(mc))))
