"""`dalle demo`: a recipe's whole pipeline, each stage skipped when its output exists.

    build the data -> train the CPU VQGAN -> train the tokenizer -> pre-encode -> train the text-to-image model
    -> train the reranking CLIP -> evaluate (its best guidance goes into the model's `sampling` section)
    -> <root>/ (grids, metrics.json) -> the `dalle serve` command

The recipe is a training config whose module also has `pipeline(arg)` naming its VQGAN, CLIP and eval configs and
the stages' time limits: configs/shapes_tiny.py (the default; outputs/demo) or configs/emoji_tiny.py
(outputs/emoji).

An interrupted demo resumes: finished stages are skipped and the training stages resume from their checkpoints.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Sequence

from dalle.cli.args import Parser

# The subcommands the stages run (the same modules `dalle` dispatches to; named here, not imported from
# dalle.cli, which itself dispatches to this module).
_STAGE_COMMANDS = {
    "data": "dalle.data.build",
    "tokenizer": "dalle.tokenizers.sentencepiece",
    "encode": "dalle.data.encode",
    "train": "dalle.train.main",
    "eval": "dalle.eval.main",
}


def _run(argv: list[str]) -> None:
    import importlib

    print(f"\n$ dalle {' '.join(argv)}", flush=True)
    code = importlib.import_module(_STAGE_COMMANDS[argv[0]]).main(argv[1:])
    if code:
        raise SystemExit(f"stage `dalle {' '.join(argv)}` failed with exit code {code}")


def pipeline_of(config_spec: str) -> dict[str, Any]:
    """The recipe's own stage configs: its config module's `pipeline(arg)` (configs/shapes_tiny.py,
    configs/emoji_tiny.py) gives {"root": where the recipe writes, "vqgan": (config spec, [overrides]),
    "clip": spec, "eval": spec, "minutes": {"vqgan": m, "dalle": m, "clip": m}} and optionally the folder names under
    root of the text-to-image workdir ("workdir", default "dalle") and the samples ("samples", default "samples"),
    so the demo knows no data set."""
    from dalle import config as config_lib

    path, _, arg = config_spec.partition(":")
    module = config_lib._import_file(path)
    if not hasattr(module, "pipeline"):
        raise ValueError(f"{path} has no pipeline(arg) function: `dalle demo` needs one naming its VQGAN, CLIP "
                         f"and eval configs (see configs/emoji_tiny.py)")
    return module.pipeline(arg or None)


def stages(config_spec: str, root: str, minutes: dict[str, float], overrides: list[str],
           eval_config: str = "") -> list[tuple[str, str, Callable]]:
    """(name, output that marks it done, action) in order; `minutes` and `eval_config` override the recipe's."""
    from dalle import config as config_lib

    cfg = config_lib.load_config(config_spec, overrides)
    d = cfg.data
    recipe = pipeline_of(config_spec)
    minutes = {**recipe["minutes"], **{k: v for k, v in minutes.items() if v is not None}}
    vqgan_spec, vqgan_overrides = recipe["vqgan"]
    eval_config = eval_config or recipe["eval"]
    vqgan_dir = os.path.dirname(d.vqgan_checkpoint.rstrip("/"))
    dalle_dir = os.path.join(root, recipe.get("workdir", "dalle"))
    # The data section is shared: a data override given to the demo reaches the VQGAN and CLIP stages too.
    data_overrides = [o for o in overrides if o.lstrip("-").startswith("config.data.")]
    out = [
        ("data", "",  # always run: the build reuses a finished dataset in a second
         lambda: _run(["data", "--config", config_spec, *overrides])),
        ("vqgan", os.path.join(d.vqgan_checkpoint, "config.json"),
         lambda: _run(["train", "--config", vqgan_spec, "--workdir", vqgan_dir, *vqgan_overrides,
                       *data_overrides, f"--config.train.max_minutes={minutes['vqgan']}"])),
        ("tokenizer", d.tokenizer_path, lambda: _run(["tokenizer", "train", "--config", config_spec, *overrides])),
        ("encode", os.path.join(d.encoded_dir, "info.json"),
         lambda: _run(["encode", "--config", config_spec, *overrides])),
        ("dalle", os.path.join(dalle_dir, "model", "config.json"),
         lambda: _run(["train", "--config", config_spec, "--workdir", dalle_dir, *overrides,
                       f"--config.train.max_minutes={minutes['dalle']}"])),
        ("clip", os.path.join(root, "clip", "model", "config.json"),
         lambda: _run(["train", "--config", recipe["clip"], "--workdir", os.path.join(root, "clip"),
                       *data_overrides, f"--config.train.max_minutes={minutes['clip']}"])),
        ("eval", os.path.join(dalle_dir, "eval", "metrics.json"),
         lambda: _run(["eval", "--config", eval_config, "--checkpoint", dalle_dir])),
        # Always run (cheap): the best measured settings go into the exported model's sampling section, also for
        # an eval that finished before the section existed.
        ("sampling", "", lambda: write_measured_sampling(dalle_dir)),
        ("samples", os.path.join(root, recipe.get("samples", "samples"), "grid.png"),
         lambda: write_samples(dalle_dir, os.path.join(root, recipe.get("samples", "samples")))),
    ]
    return out


def with_root(spec: str, root: str) -> str:
    """`configs/x.py[:variant]` with `root=DIR` appended to its argument."""
    return f"{spec}{',' if ':' in spec else ':'}root={root}"


def write_measured_sampling(dalle_dir: str) -> None:
    """The eval stage's best guidance (and the settings it sampled with) into the exported model's `sampling`
    section, unless an eval already wrote it (`dalle eval` does so itself)."""
    from dalle import model_dir
    from dalle.eval import main as eval_main

    metrics_path = os.path.join(dalle_dir, "eval", "metrics.json")
    target = model_dir.exported_model_dir(dalle_dir)
    if target is None or not os.path.isfile(metrics_path):
        print(f"[demo] sampling: no exported model or no {metrics_path}; the model keeps its own section")
        return
    if model_dir.read_extra(target).get("sampling_measured"):
        print(f"[demo] sampling: {target} already holds the measured settings")
        return
    with open(metrics_path) as f:
        written = eval_main.write_best_sampling(json.load(f), dalle_dir)
    print(f"[demo] sampling: {written['sampling'] if written['written'] else written['why']}")


def write_samples(checkpoint: str, out_dir: str, prompts: Sequence[str] = (), n: int = 4) -> None:
    """A grid per prompt plus one overview grid, all PNG: n samples per prompt, unfiltered (the README picture),
    with the model's sampling section otherwise (guidance, temperature, top-k, top-p). `prompts` default to the
    model's `sampling.examples`."""
    import numpy as np

    from dalle import generation

    os.makedirs(out_dir, exist_ok=True)
    gen = generation.Generator.from_checkpoint(checkpoint)
    settings = gen.settings({"candidates": n, "keep": 0, "clip_checkpoint": ""})
    prompts = list(prompts or settings.examples)
    if not prompts:
        raise ValueError(f"{checkpoint}: the model's sampling.examples is empty and no prompts were given")
    images = gen.images(list(prompts), num_images=n, seed=0, **settings.sampler_kwargs())
    rows = []
    for i, prompt in enumerate(prompts):
        grid = generation.make_grid(images[i * n:(i + 1) * n], cols=n)
        generation.save_png(os.path.join(out_dir, f"{i:02d}_{prompt.replace(' ', '_')}.png"), grid, scale=4)
        rows.append(images[i * n:(i + 1) * n])
    generation.save_png(os.path.join(out_dir, "grid.png"), generation.make_grid(np.concatenate(rows), cols=n),
                        scale=4)
    with open(os.path.join(out_dir, "prompts.json"), "w") as f:
        json.dump({"prompts": list(prompts), "images_per_prompt": n, "top_k": settings.top_k,
                   "top_p": settings.top_p, "condition_scale": settings.guidance,
                   "temperature": settings.temperature}, f, indent=2)


def main(argv: Sequence[str]) -> int:
    from dalle import config as config_lib

    overrides, rest = config_lib.split_config_args(list(argv))
    p = Parser(prog="dalle demo", description=__doc__.split("\n\n")[0], takes_config=True,
               examples="dalle demo --config emoji_tiny\n"
                        "dalle demo --config shapes_tiny:multi_dalle_bart,root=outputs/multi")
    p.add_argument("--config", default="configs/shapes_tiny.py",
                   help="the text-to-image recipe (its data paths; its pipeline() names the other stages)")
    p.add_argument("--root", default="", help="where every stage writes (default: the recipe's own root)")
    p.add_argument("--vqgan_minutes", type=float, default=None, help="time limit (default: the recipe's)")
    p.add_argument("--dalle_minutes", type=float, default=None, help="time limit (default: the recipe's)")
    p.add_argument("--clip_minutes", type=float, default=None, help="time limit (default: the recipe's)")
    p.add_argument("--eval_config", default="", help="config of the evaluation stage (default: the recipe's)")
    p.add_argument("--only", default="", help="comma-separated stage names to run (default: all)")
    args = p.parse_args(rest)
    spec = with_root(args.config, args.root) if args.root else args.config
    recipe = pipeline_of(spec)
    root = recipe["root"]
    dalle_dir = os.path.join(root, recipe.get("workdir", "dalle"))
    t0 = time.time()
    only = {s for s in args.only.split(",") if s}
    eval_config = with_root(args.eval_config, root) if args.eval_config else ""
    for name, done_marker, action in stages(spec, root, {"vqgan": args.vqgan_minutes, "dalle": args.dalle_minutes,
                                                         "clip": args.clip_minutes}, overrides, eval_config):
        if only and name not in only:
            continue
        if done_marker and os.path.exists(done_marker):
            print(f"[demo] {name}: done already ({done_marker})", flush=True)
            continue
        t = time.time()
        print(f"[demo] {name}: running", flush=True)
        action()
        print(f"[demo] {name}: finished in {time.time() - t:.0f} s", flush=True)
    print(f"\n[demo] all stages done in {(time.time() - t0) / 60:.1f} min; outputs in {root}/")
    example = (config_lib.load_config(spec, overrides).get("sampling") or {}).get("examples") or ("a red circle",)
    print(f"[demo] try:  .venv/bin/dalle generate \"{example[0]}\" --checkpoint {dalle_dir}")
    print(f"[demo] serve: .venv/bin/dalle serve --checkpoint {dalle_dir}   (http://127.0.0.1:7860)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
