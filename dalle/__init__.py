"""dalle: DALL·E-mini-family text-to-image models in JAX + Haiku.

    from dalle import Generator
    images = Generator.from_pretrained("weights/dalle_mini")("a red apple", n=4, seed=0)

`Generator` (dalle.generation.Generator) is imported on first use, so `import dalle` stays light: no jax until a
model is needed.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public names imported on first access: name -> module that defines it.
_LAZY = {"Generator": "dalle.generation"}

__all__ = ["Generator", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dalle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
