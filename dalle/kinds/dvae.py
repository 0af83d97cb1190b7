"""`model.kind = "dvae"`: OpenAI DALL·E's discrete VAE (dalle/modeling/dvae/), trained by the dVAE task and loaded
as an image tokenizer by `dalle encode` and generation."""

from dalle.kinds import ImageTokenizer, ModelKind, register_image_tokenizer, register_model_kind
from dalle.modeling.dvae import schema

register_model_kind(ModelKind(
    name="dvae",
    description="discrete VAE image tokenizer (OpenAI DALL·E's architecture)",
    defaults=schema.model_defaults,
    check=schema.check_model,
    task="dvae",
))
register_image_tokenizer(ImageTokenizer(name="dvae", load="dalle.modeling.dvae.api:DVAETokenizer.from_checkpoint"))
