"""The text-conditional GAN: model (sentence encoder, generator, projection discriminator), losses, schema,
text (prompt tokenization shared by training and sampling) and api (GANGenerator)."""
