"""`model.kind = "dalle_bart"`: dalle-mini's encoder-decoder (dalle/modeling/dalle_bart.py)."""

from dalle.kinds import ModelKind, register_model_kind
from dalle.modeling import schema

register_model_kind(ModelKind(
    name="dalle_bart",
    description="dalle-mini's BART encoder-decoder over text and image tokens",
    defaults=schema.dalle_bart_defaults,
    check=schema.check_dalle_bart,
    task="dalle",
    model="dalle.modeling.model:DalleBartModel",
    features="encdec",
))
