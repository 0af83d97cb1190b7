"""Schemas of the config sections owned by dalle.eval (see dalle/config.py: register_schema)."""

from __future__ import annotations

from ml_collections import ConfigDict  # noqa: F401  (used by the schemas registered here)

from dalle import config_registry as config_lib  # noqa: F401
