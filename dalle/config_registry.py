"""Where config sections declare their schema (defaults + checks); read by dalle/config.py's validation.

Kept apart from dalle/config.py so that schema modules, which config.py imports, do not import config.py back.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from ml_collections import ConfigDict

Check = Callable[[ConfigDict, ConfigDict], Iterable[str]]  # (section, whole config) -> error messages


@dataclasses.dataclass
class Schema:
    defaults: Callable[[], ConfigDict]
    check: Check | None


# section -> kind (None when the section has no `kind`) -> schema; section "" holds the root keys.
SCHEMAS: dict[str, dict[str | None, Schema]] = {}
GLOBAL_CHECKS: list[Check] = []


def register_schema(section: str, defaults: Callable[[], ConfigDict], check: Check | None = None,
                    kind: str | None = None) -> None:
    """Declares the keys, default values and consistency checks of one config section (or one `kind` of it)."""
    SCHEMAS.setdefault(section, {})[kind] = Schema(defaults, check)


def register_global_check(check: Check) -> None:
    """A check that looks across sections (e.g. the model's vocabulary against the data's tokenizer)."""
    GLOBAL_CHECKS.append(check)


def schema_for(section: str, value: Any) -> Schema | None:
    kinds = SCHEMAS.get(section, {})
    if None in kinds:
        return kinds[None]
    kind = value.get("kind") if isinstance(value, ConfigDict) else None
    return kinds.get(kind)

# Older private names, still used by schema modules that compose with another section's schema.
_SCHEMAS = SCHEMAS
_Schema = Schema
