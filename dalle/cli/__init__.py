"""The `dalle` command: a thin dispatcher; each subcommand lives in the module that owns the work.

Subcommands are imported lazily so `dalle --help` stays fast and a broken optional dependency only affects the
subcommand that needs it. Each target is `main(argv: list[str]) -> int`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Mapping, Sequence

# name -> (module:function, one-line help). A command with subcommands (`dalle convert vqgan`) keeps its own table
# in its module and dispatches with `dispatch_group`.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("dalle.cli:config_main", "print a config (name or path, variant, overrides); `config list` lists them"),
    "data": ("dalle.data.build:main", "build a tfds dataset (captioned shapes, image folders, webdataset, ...)"),
    "tokenizer": ("dalle.tokenizers.sentencepiece:main", "train a sentencepiece tokenizer on a dataset's captions"),
    "encode": ("dalle.data.encode:main", "pre-encode a dataset's images to VQGAN tokens"),
    "train": ("dalle.train.main:main", "train a model from a config (DALL·E model, VQGAN or CLIP)"),
    "generate": ("dalle.cli.generate:main", "generate images for prompts"),
    "eval": ("dalle.eval.cli:main", "run the evaluation job (accuracy, CLIP score, FID); `eval compare` methods"),
    "serve": ("dalle.serve:main", "serve the web demo on 127.0.0.1"),
    "convert": ("dalle.convert:main", "convert published weights (`dalle convert --help` lists the sources)"),
    "export": ("dalle.export:main", "export a model to another code base's layout (`dalle export --help`)"),
    "demo": ("dalle.demo:main", "run the whole pipeline on the captioned-shapes data"),
}


# Imports that only some commands need -> the pyproject extra that installs them.
OPTIONAL_PACKAGES = {"starlette": "serve", "uvicorn": "serve", "h11": "serve", "pyarrow": "data",
                     "safetensors": "data", "torch": "ref", "pytorch_lightning": "ref", "omegaconf": "ref",
                     "taming": "ref"}


def _usage() -> str:
    lines = ["usage: dalle <command> [args]", "", "commands:"]
    for name, (_, text) in COMMANDS.items():
        lines.append(f"  {name:10s} {text}")
    lines.append("")
    lines.append("`dalle <command> --help` for a command's options; `dalle --version` for the version.")
    lines.append("Configs are named (`--config shapes_tiny:multi`, see `dalle config list`) or given by path, and")
    lines.append("any config key is overridden on the command line: `--config.train.batch_size=32`.")
    return "\n".join(lines)


def config_main(argv: Sequence[str]) -> int:
    import argparse

    from dalle import config as config_lib

    if list(argv[:1]) == ["list"]:
        rows = config_lib.list_configs()
        width = max(len(n) for n, _ in rows) if rows else 0
        for name, doc in rows:
            print(f"{name:{width}s}  {doc}")
        return 0
    overrides, rest = config_lib.split_config_args(argv)
    parser = argparse.ArgumentParser(
        prog="dalle config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load, validate and print a config.",
        epilog="examples:\n  dalle config list\n  dalle config --config shapes_tiny:multi\n"
               "  dalle config --config configs/shapes_tiny.py --config.train.batch_size=32")
    parser.add_argument("--config", required=True,
                        help="a packaged config's name or a path/to/config.py, with an optional :variant")
    args = parser.parse_args(rest)
    try:
        config = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(config_lib.to_yaml_like(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("--version", "-V", "version"):
        from dalle import __version__

        print(f"dalle {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"dalle: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return call(COMMANDS[name][0], rest, f"dalle {name}")


def call(target: str, argv: Sequence[str], label: str) -> int:
    """Imports `module:function` and runs it on argv; a missing optional package becomes the extra to install."""
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
        result = getattr(module, func_name)(list(argv))
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"{label}: not available in this version ({module_name} is missing)", file=sys.stderr)
            return 2
        extra = OPTIONAL_PACKAGES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"{label}: needs the optional package {e.name.split('.')[0]!r}: pip install 'dalle[{extra}]'",
              file=sys.stderr)
        return 2
    return int(result or 0)


def dispatch_group(group: str, table: Mapping[str, tuple[str, str]], argv: Sequence[str], args_usage: str) -> int:
    """`dalle <group> <name> ...` -> table[name]'s `module:function` (as `call` runs it); usage on stderr otherwise."""
    argv = list(argv)
    if not argv or argv[0] not in table:
        print(f"usage: dalle {group} {{{','.join(table)}}} {args_usage}", file=sys.stderr)
        for name, (_, text) in table.items():
            print(f"  {name:11s} {text}", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"dalle {group}: unknown {group} target {argv[0]!r}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return call(table[argv[0]][0], argv[1:], f"dalle {group} {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
