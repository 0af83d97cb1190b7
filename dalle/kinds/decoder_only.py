"""`model.kind = "decoder_only"`: DALL·E / CogView single-stream transformer (dalle/modeling/decoder_only.py)."""

from dalle.kinds import ModelKind, register_model_kind
from dalle.modeling import schema

register_model_kind(ModelKind(
    name="decoder_only",
    description="DALL·E / CogView decoder-only transformer over [text] [BOS] [image] tokens",
    defaults=schema.decoder_only_defaults,
    check=schema.check_decoder_only,
    task="dalle",
    model="dalle.modeling.model:DecoderOnlyModel",
    features="decoder_only",
))
