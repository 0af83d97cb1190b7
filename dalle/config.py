"""Config files, variants, command-line overrides and validation (big_vision style).

A config is a Python file with `get_config(arg=None) -> ml_collections.ConfigDict`. It is selected as
`path/to/x.py` or `path/to/x.py:variant` and tweaked with dotted overrides such as `--config.model.d_model=512`.

Every top-level section (`model`, `train`, `mesh`, ...) is checked against a *schema*: a ConfigDict of defaults
registered by the module that owns the section. Validation fills missing keys from the schema, rejects unknown
keys and wrong types, and runs the section's consistency checks, all before any work starts. Errors name the key.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import dataclasses
import math
import os
from typing import Any, Callable, Iterable, Sequence

import ml_collections

ConfigDict = ml_collections.ConfigDict

# Modules that register schemas; imported lazily by `validate` (they must stay light: no jax/tf imports).
SCHEMA_MODULES = (
    "dalle.train.schema",
    "dalle.modeling.vqgan.schema",
    "dalle.data.schema",
    "dalle.eval.schema",
    "dalle.sampling_schema",
    "dalle.clip_guided_schema",
)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending key."""


# ----------------------------------------------------------------------------------------------------------------
# Schema registry: each module that owns a config section declares its defaults and checks here
# ----------------------------------------------------------------------------------------------------------------
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



def _load_schemas() -> None:
    for name in SCHEMA_MODULES:
        importlib.import_module(name)
    from dalle import registry

    registry.MODEL_KINDS.names()  # imports dalle/kinds/*, which register the `model` schema of each kind


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
def packaged_configs_dir() -> str:
    """The configs that ship with the package (`dalle/configs`: in a checkout a link to the repo's configs/; where
    the link is not copied, e.g. Bazel's runfiles, the configs/ folder next to the package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "configs"), os.path.join(os.path.dirname(here), "configs")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(here, "configs")


def config_file(path: str) -> str:
    """A config file from a path, or from a name of a packaged config: `shapes_tiny`, `eval/shapes`, or a
    checkout-relative `configs/shapes_tiny.py` run from elsewhere (the pipeline configs name each other so)."""
    if os.path.isfile(path):
        return path
    name = path[len("configs/"):] if path.startswith("configs/") else path
    name = name[:-3] if name.endswith(".py") else name
    candidate = os.path.join(packaged_configs_dir(), *name.split("/")) + ".py"
    if name and not os.path.isabs(name) and os.path.isfile(candidate):
        return candidate
    known = [n for n, _ in list_configs()]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else " (`dalle config list` shows the packaged configs)"
    if "/" in path or path.endswith(".py"):
        raise ConfigError(f"config file {path!r} does not exist, nor is {name!r} a packaged config name{hint}")
    raise ConfigError(f"config {path!r} is neither a file nor a packaged config name{hint}")


def list_configs() -> list[tuple[str, str]]:
    """(name, first line of its docstring) of every packaged config with a get_config, read without running it."""
    root = packaged_configs_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")))
        for f in sorted(filenames):
            if not f.endswith(".py") or f.startswith("_"):
                continue
            path = os.path.join(dirpath, f)
            try:
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
            except (OSError, SyntaxError):
                continue
            if not any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body):
                continue
            doc = (ast.get_docstring(tree) or "").strip().splitlines()
            name = os.path.relpath(path, root)[:-3].replace(os.sep, "/")
            out.append((name, doc[0] if doc else ""))
    return out


def _import_file(path: str):
    path = config_file(path)
    name = "dalle_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} has no get_config(arg=None) function")
    return module


def load_config(spec: str, overrides: Sequence[str] = (), validate_config: bool = True) -> ConfigDict:
    """`spec` is `file.py`, `file.py:variant` or a packaged config's name (`shapes_tiny:multi`); `overrides` are
    `--config.a.b=value` or `a.b=value` strings."""
    path, _, arg = spec.partition(":")
    module = _import_file(path)
    try:
        config = module.get_config(arg or None)
    except ConfigError:
        raise
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{path}: get_config({arg!r}) failed: {e}") from e
    if not isinstance(config, ConfigDict):
        raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict, got {type(config).__name__}")
    config = ConfigDict(config.to_dict())  # detach field references: overrides must not surprise
    apply_overrides(config, overrides)
    if validate_config:
        config = validate(config)
    return config


def variant_and_root(arg: str | None, variants: Sequence[str], default_root: str = "outputs/demo") -> tuple[str, str]:
    """Parses a config argument of the form `variant[,root=DIR]` (the first of `variants` is the default); the
    pipeline configs use it so every artifact of a run can be moved under one directory."""
    parts = [p for p in (arg or "").split(",") if p]
    opts = dict(p.split("=", 1) for p in parts if "=" in p)
    named = [p for p in parts if "=" not in p]
    variant = named[0] if named else variants[0]
    if variant not in variants or len(named) > 1:
        raise ValueError(f"unknown variant {arg!r} (known: {', '.join(variants)}; plus root=DIR)")
    root = opts.pop("root", default_root)
    if opts:
        raise ValueError(f"unknown option(s) {sorted(opts)} (known: root)")
    return variant, root


@dataclasses.dataclass
class Layered:
    """Settings layered from schema defaults, a config's section and caller overrides (`layer_settings`)."""

    values: dict[str, Any]
    origin: dict[str, str]  # key -> where its value came from (absent: the schema default)
    errors: list[str]  # unknown keys in the config's section
    section: str

    def name(self, key: str) -> str:
        """How an error names the setting: the flag or argument that set it, else `<section>.<key>`."""
        return self.origin.get(key, f"{self.section}.{key}")


def section_of(config: Any, section: str, error: Callable[[str], Exception]) -> Any:
    """The `section` of a (model's) config, {} when it has none; `error(message)` when it is not a section."""
    if config is None or not hasattr(config, "get"):
        return {}
    value = config.get(section)
    if value is None:
        return {}
    if not hasattr(value, "items"):
        raise error(f"the model's {section} entry must be a section, got {type(value).__name__}")
    return value


def layer_settings(defaults: dict[str, Any], config: Any, section: str, overrides: Any, labels: Any,
                   error: Callable[[str], Exception], what: str) -> Layered:
    """Schema `defaults`, then `config`'s `section`, then every override that is not None (`labels`: how each
    override is named in errors, e.g. {"steps": "--steps"}). An unknown override raises `error`; unknown keys in
    the section are collected in `errors` for the caller to report with its own checks. `what`: "a sampling
    setting", ..."""
    values, origin, errors = dict(defaults), {}, []
    for key, value in section_of(config, section, error).items():
        if key not in values:
            errors.append(f"unknown key in the model's {section} section: {key!r} (known: {', '.join(values)})")
            continue
        values[key], origin[key] = value, f"the model's {section}.{key}"
    for key, value in (overrides or {}).items():
        if key not in values:
            raise error(f"{key!r} is not {what} (known: {', '.join(values)})")
        if value is not None:
            values[key], origin[key] = value, (labels or {}).get(key, key)
    return Layered(values, origin, errors, section)


def sibling_config(config_file: str, name: str):
    """The module of another config file in the same folder (e.g. configs/shapes_data.py's `data_config`)."""
    return _import_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name))


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.x.y=v` overrides from the rest of a command line."""
    overrides, rest = [], []
    it = iter(argv)
    for a in it:
        if a.startswith("--config."):
            if "=" not in a:
                try:
                    a = f"{a}={next(it)}"
                except StopIteration:
                    raise ConfigError(f"override {a!r} has no value") from None
            overrides.append(a)
        else:
            rest.append(a)
    return overrides, rest


def parse_value(text: str, current: Any, key: str) -> Any:
    """Parses an override string into the type of the value it replaces."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{key}={text!r}: expected a bool (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected an int") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{key}={text!r}: expected a float") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(v.strip() for v in text.split(",") if v.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return tuple(value)
    # None or another type: best effort literal, else string.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _known_keys_msg(node: ConfigDict, key: str) -> str:
    keys = sorted(node.keys())
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"known keys: {', '.join(keys)}{hint}"


def apply_overrides(config: ConfigDict, overrides: Sequence[str]) -> None:
    """Applies dotted overrides in place; an unknown key or a value of the wrong type raises ConfigError."""
    for item in overrides:
        body = item[2:] if item.startswith("--") else item
        if body.startswith("config."):
            body = body[len("config."):]
        if "=" not in body:
            raise ConfigError(f"override {item!r} is not of the form --config.key=value")
        key, text = body.split("=", 1)
        parts = key.split(".")
        node = config
        for depth, part in enumerate(parts[:-1]):
            if part not in node or not isinstance(node[part], ConfigDict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--config.{key}: unknown section {where!r} ({_known_keys_msg(node, part)})")
            node = node[part]
        leaf = parts[-1]
        if leaf not in node:
            # New keys are allowed only where the schema has them (validated later); the config may omit defaults.
            node[leaf] = parse_value(text, _schema_default(config, parts), key)
            continue
        if isinstance(node[leaf], ConfigDict):
            raise ConfigError(f"--config.{key}: {key!r} is a section, not a value")
        value = parse_value(text, node[leaf], key)
        try:
            node[leaf] = value
        except TypeError as e:
            raise ConfigError(f"--config.{key}={text!r}: {e}") from None


def _schema_default(config: ConfigDict, parts: Sequence[str]) -> Any:
    """Default value of a dotted key according to the schema (None when unknown: validate will complain)."""
    _load_schemas()
    section = parts[0]
    if section not in SCHEMAS:
        return None
    node = schema_for(section, config.get(section))
    if node is None:
        return None
    node = node.defaults()
    for p in parts[1:]:
        if not isinstance(node, ConfigDict) or p not in node:
            return None
        node = node[p]
    return node


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def _type_ok(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    return isinstance(value, type(default))


def _merge(defaults: ConfigDict, given: ConfigDict, prefix: str, errors: list[str], open_keys: bool) -> ConfigDict:
    out = ConfigDict(defaults.to_dict())
    for key in given.keys():
        value = given[key]
        name = f"{prefix}.{key}"
        if key not in defaults:
            if open_keys:
                out[key] = value
                continue
            errors.append(f"unknown key {name!r} ({_known_keys_msg(defaults, key)})")
            continue
        default = defaults[key]
        if isinstance(default, ConfigDict):
            if not isinstance(value, ConfigDict):
                errors.append(f"{name!r} must be a section (ConfigDict), got {type(value).__name__}")
                continue
            # An empty default section is an open mapping (e.g. per-dataset options).
            out[key] = _merge(default, value, name, errors, open_keys=len(default) == 0)
            continue
        if isinstance(value, ConfigDict):
            errors.append(f"{name!r} must be a value of type {type(default).__name__}, got a section")
            continue
        if not _type_ok(default, value):
            errors.append(f"{name!r} = {value!r} has type {type(value).__name__}, expected {type(default).__name__}")
            continue
        if isinstance(value, float) and math.isnan(value):
            errors.append(f"{name!r} = nan is not a number")
            continue
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        if isinstance(value, list):
            value = tuple(value)
        with out.ignore_type():
            out[key] = value
    return out


def validate(config: ConfigDict) -> ConfigDict:
    """Returns the config completed with schema defaults; raises ConfigError listing every problem found."""
    _load_schemas()
    errors: list[str] = []
    out = ConfigDict()
    root = SCHEMAS.get("", {}).get(None)
    root_defaults = root.defaults() if root else ConfigDict()
    for key in config.keys():
        value = config[key]
        if key in SCHEMAS:
            schema = schema_for(key, value)
            if schema is None:
                kind = value.get("kind") if isinstance(value, ConfigDict) else None
                known = sorted(k for k in SCHEMAS[key] if k)
                errors.append(f"{key}.kind = {kind!r} is not one of {known}")
                continue
            if not isinstance(value, ConfigDict):
                errors.append(f"{key!r} must be a section (ConfigDict), got {type(value).__name__}")
                continue
            out[key] = _merge(schema.defaults(), value, key, errors, open_keys=False)
        elif key in root_defaults:
            default = root_defaults[key]
            if not _type_ok(default, value):
                errors.append(f"{key!r} = {value!r} has type {type(value).__name__}, expected {type(default).__name__}")
            out[key] = value
        else:
            known = ConfigDict({**{k: 0 for k in SCHEMAS if k}, **root_defaults.to_dict()})
            errors.append(f"unknown key {key!r} ({_known_keys_msg(known, key)})")
    # Sections with a schema that every config gets (e.g. mesh) are filled in when absent.
    for section, kinds in SCHEMAS.items():
        if section and section not in out and None in kinds and section in _ALWAYS_PRESENT:
            out[section] = kinds[None].defaults()
    for key in root_defaults.keys():
        if key not in out:
            out[key] = root_defaults[key]
    if not errors:
        for section in out.keys():
            if section in SCHEMAS and isinstance(out[section], ConfigDict):
                schema = schema_for(section, out[section])
                if schema and schema.check:
                    errors.extend(schema.check(out[section], out))
        for check in GLOBAL_CHECKS:
            errors.extend(check(out, out))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return out


_ALWAYS_PRESENT = {"mesh"}


def to_yaml_like(config: ConfigDict) -> str:
    """Stable human-readable dump written next to checkpoints, and compared on resume."""
    return config.to_json_best_effort(indent=2, sort_keys=True)


def diff(a: ConfigDict, b: ConfigDict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (for the resume-compatibility message)."""
    out = []
    keys = sorted(set(a.keys()) | set(b.keys()))
    for k in keys:
        name = f"{prefix}{k}"
        va, vb = a.get(k, "<absent>"), b.get(k, "<absent>")
        if isinstance(va, ConfigDict) and isinstance(vb, ConfigDict):
            out.extend(diff(va, vb, name + "."))
        elif _normalize(va) != _normalize(vb):
            out.append(f"{name}: {va!r} != {vb!r}")
    return out


def _normalize(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_normalize(x) for x in v)
    if isinstance(v, tuple):
        return tuple(_normalize(x) for x in v)
    return v
