"""`model.kind = "gan"`: the text-conditional GAN (dalle/modeling/gan/), trained by the GAN task and sampled by
dalle.modeling.gan.api.GANGenerator (noise + sentence embedding -> image in one pass, no image tokens)."""

from dalle.kinds import ModelKind, register_model_kind
from dalle.modeling.gan import schema

register_model_kind(ModelKind(
    name="gan",
    description="text-conditional GAN: sentence encoder, generator, projection discriminator",
    defaults=schema.model_defaults,
    check=schema.check_model,
    task="gan",
    direct_generator="dalle.modeling.gan.api:GANGenerator",
))
