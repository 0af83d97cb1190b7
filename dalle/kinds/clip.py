"""`model.kind = "clip"`: CLIP (dalle/modeling/clip/), trained contrastively for reranking and evaluation."""

from dalle.kinds import ModelKind, register_model_kind
from dalle.modeling.clip import schema

register_model_kind(ModelKind(
    name="clip",
    description="CLIP image and text towers (OpenAI's architecture)",
    defaults=schema.clip_defaults,
    check=schema.check_clip,
    task="clip",
))
