"""Schemas of the `model` config section for the text-to-image models (see dalle/config.py: register_schema).

Two kinds:
  * `dalle_bart`: dalle-mini's encoder-decoder. Keys are named exactly as in dalle-mini's `DalleBartConfig`
    (d_model, encoder_layers, ..., ln_positions, use_glu, ...) so a dalle-mini `config.json` maps key for key.
    One deliberate difference: `image_vocab_size` is the number of VQGAN codes (16384); dalle-mini's larger
    `image_vocab_size` (16391 for mini, 16415 for mega: unused extra rows) is `image_vocab_size +
    image_extra_tokens` here. BOS is `image_vocab_size`, as dalle-mini's decoder_start_token_id.
  * `decoder_only`: DALL·E / CogView single-stream transformer over `[text] [BOS] [image]`.

Light on purpose: no jax import (validation must stay cheap).
"""

from __future__ import annotations

from ml_collections import ConfigDict

from dalle.modeling import norm_placement
from dalle.modeling.norm_placement import LN_TYPES

ACTIVATIONS = ("gelu", "gelu_new", "gelu_exact", "swish", "silu", "smelu", "smelu_dallemini", "relu")

# Size keys have no default (0 = unset, keeping the int type for overrides): a config that forgets one fails
# validation instead of silently getting some large model. Published sizes: dalle/modeling/presets.py.
_COMMON_SIZE_KEYS = ("d_model", "image_vocab_size", "max_text_length", "image_length")
DALLE_BART_SIZE_KEYS = _COMMON_SIZE_KEYS + (
    "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim",
    "decoder_ffn_dim", "encoder_vocab_size")
DECODER_ONLY_SIZE_KEYS = _COMMON_SIZE_KEYS + ("num_layers", "num_heads", "ffn_dim", "text_vocab_size")


def _common(c: ConfigDict) -> None:
    c.image_vocab_size = 0  # VQGAN codes; BOS = image_vocab_size
    c.max_text_length = 0
    c.image_length = 0
    c.ln_type = "layernorm"
    c.use_glu = True
    c.use_bias = False
    c.use_head_scale = False
    c.use_cosine_attention = False
    c.tau_init = 0.05
    c.use_swin_position_embeddings = False
    c.use_deepnet_scaling = False
    c.use_subln_init = False
    c.force_ln_scale = False
    c.scale_embedding = False
    c.activation_function = "gelu"
    c.dropout = 0.0
    c.attention_dropout = 0.0
    c.activation_dropout = 0.0
    c.init_std = 0.02
    c.remat = False  # gradient checkpointing of every layer (dalle-mini's gradient_checkpointing)
    c.scan_layers = True  # hk.layer_stack (dalle-mini's use_scan); False = one module per layer
    # Saved model directory whose text-encoder params (model.encoder_param_filter) initialise this model (the
    # trainer's load_pretrained reads it); "" = none.
    # A model dir (converted or trained), or a Hugging Face BART / BERT / RoBERTa directory, whose text-encoder
    # params start this model's encoder (dalle/modeling/hf_encoders.py).
    c.encoder_init = ""
    # Whole-model fine-tuning: a model directory (`dalle convert dalle-mini` output, an exported model) or a trainer
    # workdir whose every parameter starts this model, which must have the same architecture; "" = none. With
    # encoder_init as well, the encoder comes from encoder_init and everything else from init_from.
    c.init_from = ""


def dalle_bart_defaults() -> ConfigDict:
    """dalle-mini's architecture switches (NormFormer, GLU); every size in DALLE_BART_SIZE_KEYS is left unset."""
    c = ConfigDict()
    c.kind = "dalle_bart"
    for key in DALLE_BART_SIZE_KEYS:
        c[key] = 0
    c.image_extra_tokens = 0  # dalle-mini's unused rows between the codes and BOS (mini: 7, mega: 31)
    _common(c)
    c.ln_positions = "normformer"
    c.use_absolute_position_embeddings = True
    c.sinkhorn_iters = 1
    c.use_final_ln_encoder = True
    c.use_final_ln_decoder = True
    _text_encoder(c)
    return c


def _text_encoder(c: ConfigDict) -> None:
    """The text encoder's own switches, so that a pretrained encoder (`model.encoder_init` = a Hugging Face BART,
    BERT or RoBERTa directory, dalle/modeling/hf_encoders.py) fits under a decoder built otherwise. None = the
    shared key without the `encoder_` prefix; every default is the encoder dalle-mini has."""
    c.encoder_ln_positions = None  # e.g. "postln" for BART / BERT / RoBERTa
    c.encoder_use_bias = None  # biases of the attention projections and FFN
    c.encoder_use_glu = None
    c.encoder_activation_function = None  # "gelu" is the exact (erf) GELU of BART and BERT
    c.encoder_layer_norm_eps = 1e-5  # BERT and RoBERTa: 1e-12
    c.encoder_token_types = 0  # > 0: a token-type table (BERT's [types, d]) whose row 0 is added to every token


def decoder_only_defaults() -> ConfigDict:
    """Pre-LN single-stream switches; every size in DECODER_ONLY_SIZE_KEYS is left unset."""
    c = ConfigDict()
    c.kind = "decoder_only"
    for key in DECODER_ONLY_SIZE_KEYS:
        c[key] = 0
    _common(c)
    c.ln_positions = "preln"  # "cogview" (= "sandwich") is CogView's sandwich-LN
    c.use_final_ln = True
    c.embedding_ln = False
    c.text_loss_weight = 0.125  # DALL·E: 1/8 text, 7/8 image
    c.image_loss_weight = 0.875
    # > 0: codes also embedded and scored through their VQGAN codebook vectors (this many dims; the VQGAN's
    # embed_dim), a frozen table the trainer fills from data.vqgan_checkpoint (dalle/modeling/decoder_only.py).
    c.image_code_features = 0
    # What fills that table: "codebook" (the codebook vector, F = the VQGAN's embed_dim) or "codebook_pixels" (that
    # vector and the RGB pixels the VQGAN decoder draws for the code, F = embed_dim + 3 * factor**2).
    c.image_code_feature_source = "codebook"
    # "per_code": each code has its own embedding row and head column (plus the features above, if any);
    # "from_features": both are MLPs of the feature table only (needs image_code_features > 0).
    c.image_code_weights = "per_code"
    return c


def check_sizes(m: ConfigDict, keys: tuple[str, ...]):
    """Every size must be given by the config (no silent default) and be positive."""
    for key in keys:
        value = m.get(key)
        if not value:
            yield (f"model.{key} is required (no default size; published sizes: configs/model_presets.py, "
                   f"dalle.modeling.presets)")
        elif value < 0:
            yield f"model.{key} = {value} must be positive"


def _check_common(m: ConfigDict, heads: dict[str, int]):
    for key, h in heads.items():
        if h > 0 and m.d_model > 0 and m.d_model % h:
            yield f"model.d_model = {m.d_model} is not divisible by model.{key} = {h}"
    if m.ln_type not in LN_TYPES:
        yield f"model.ln_type = {m.ln_type!r} is not one of {LN_TYPES}"
    if m.ln_positions not in norm_placement.names():
        yield f"model.ln_positions = {m.ln_positions!r} is not one of {norm_placement.names()}"
    if m.activation_function not in ACTIVATIONS:
        yield f"model.activation_function = {m.activation_function!r} is not one of {ACTIVATIONS}"
    for key in ("dropout", "attention_dropout", "activation_dropout"):
        if not 0.0 <= m[key] < 1.0:
            yield f"model.{key} = {m[key]} must be in [0, 1)"
    if m.use_cosine_attention and m.tau_init <= 0:
        yield f"model.tau_init = {m.tau_init} must be positive with use_cosine_attention"
    if m.use_deepnet_scaling and m.use_subln_init:
        yield "model.use_deepnet_scaling and model.use_subln_init are mutually exclusive"
    if m.init_std <= 0:
        yield f"model.init_std = {m.init_std} must be positive"


def check_dalle_bart(m: ConfigDict, _: ConfigDict):
    yield from check_sizes(m, DALLE_BART_SIZE_KEYS)
    yield from _check_common(m, {"encoder_attention_heads": m.encoder_attention_heads,
                                 "decoder_attention_heads": m.decoder_attention_heads})
    if m.image_extra_tokens < 0:
        yield f"model.image_extra_tokens = {m.image_extra_tokens} must be >= 0"
    if m.sinkhorn_iters < 1:
        yield f"model.sinkhorn_iters = {m.sinkhorn_iters} must be >= 1"
    if (m.ln_positions in norm_placement.names() and not norm_placement.get(m.ln_positions).final_norm
            and not (m.use_final_ln_encoder and m.use_final_ln_decoder)):
        # dalle-mini asserts it for post-LN, whose layers already end with a norm (no final_ln is created).
        yield (f"model.use_final_ln_encoder/decoder must be True with ln_positions {m.ln_positions} "
               "(as dalle-mini requires)")
    yield from _check_text_encoder(m)


def _check_text_encoder(m: ConfigDict):
    checks = {"encoder_ln_positions": (str, norm_placement.names()), "encoder_use_bias": (bool, None),
              "encoder_use_glu": (bool, None), "encoder_activation_function": (str, ACTIVATIONS)}
    for key, (kind, allowed) in checks.items():
        value = m.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (allowed is not None and value not in allowed):
            want = f"one of {allowed}" if allowed is not None else kind.__name__
            yield f"model.{key} = {value!r}: expected None (= model.{key[len('encoder_'):]}) or {want}"
    if not isinstance(m.encoder_layer_norm_eps, (int, float)) or not m.encoder_layer_norm_eps > 0:
        yield f"model.encoder_layer_norm_eps = {m.encoder_layer_norm_eps} must be positive"
    if m.encoder_token_types < 0:
        yield f"model.encoder_token_types = {m.encoder_token_types} must be >= 0 (0 = no token-type embedding)"


CODE_FEATURE_SOURCES = ("codebook", "codebook_pixels")


def check_decoder_only(m: ConfigDict, _: ConfigDict):
    yield from check_sizes(m, DECODER_ONLY_SIZE_KEYS)
    yield from _check_common(m, {"num_heads": m.num_heads})
    if m.text_loss_weight < 0 or m.image_loss_weight < 0:
        yield "model.text_loss_weight and model.image_loss_weight must be >= 0"
    if m.text_loss_weight + m.image_loss_weight <= 0:
        yield "model.text_loss_weight + model.image_loss_weight must be positive"
    if m.image_code_features < 0:
        yield f"model.image_code_features = {m.image_code_features} must be >= 0 (0 = off)"
    if m.image_code_feature_source not in CODE_FEATURE_SOURCES:
        yield (f"model.image_code_feature_source = {m.image_code_feature_source!r}: expected one of "
               f"{', '.join(map(repr, CODE_FEATURE_SOURCES))}")
    if m.image_code_weights not in ("per_code", "from_features"):
        yield f"model.image_code_weights = {m.image_code_weights!r}: expected 'per_code' or 'from_features'"
    elif m.image_code_weights == "from_features" and m.image_code_features <= 0:
        yield "model.image_code_weights = 'from_features' needs model.image_code_features > 0"


