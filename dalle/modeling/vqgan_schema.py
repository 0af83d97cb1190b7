"""Schema of the VQGAN model config (model.kind = "vqgan"); see dalle/config.py."""

from __future__ import annotations

from dalle import config as config_lib  # noqa: F401
