"""dalle: DALL·E-mini-family text-to-image models in JAX + Haiku."""

__version__ = "0.1.0"
