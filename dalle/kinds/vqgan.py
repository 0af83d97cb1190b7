"""`model.kind = "vqgan"`: the taming-transformers VQGAN (dalle/modeling/vqgan/), trained by the VQGAN task and
loaded as an image tokenizer by `dalle encode` and generation."""

from dalle.kinds import ImageTokenizer, ModelKind, register_image_tokenizer, register_model_kind
from dalle.modeling.vqgan import schema

register_model_kind(ModelKind(
    name="vqgan",
    description="VQGAN image tokenizer (taming-transformers architecture)",
    defaults=schema.model_defaults,
    check=schema.check_model,
    task="vqgan",
))
register_image_tokenizer(ImageTokenizer(name="vqgan", load="dalle.modeling.vqgan.api:VQGANTokenizer.from_checkpoint"))
