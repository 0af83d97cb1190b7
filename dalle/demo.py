"""`dalle demo`: the whole pipeline on the captioned-shapes world, each stage skipped when its output exists.

    build shapes data -> train the CPU VQGAN -> train the tokenizer -> pre-encode -> train shapes_tiny
    -> train the reranking CLIP -> evaluate (its best guidance goes into the model's `sampling` section)
    -> outputs/demo/ (grids, metrics.json) -> the `dalle serve` command

An interrupted demo resumes: finished stages are skipped and the training stages resume from their checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

EXAMPLE_PROMPTS = (
    "a red circle",
    "a small blue square in the top left",
    "a large green star in the center",
    "a yellow triangle at the bottom right",
    "a purple diamond",
    "a small white cross on the left",
    "an orange star",
    "a cyan circle in the bottom left",
)


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


def stages(config_spec: str, root: str, minutes: dict[str, float], overrides: list[str],
           eval_config: str = "configs/eval/shapes.py") -> list[tuple[str, str, Callable]]:
    """(name, output that marks it done, action) in order."""
    from dalle import config as config_lib

    cfg = config_lib.load_config(config_spec, overrides)
    d = cfg.data
    world = [f"--config.data.{k}={_fmt(d[k])}" for k in
             ("seed", "image_size", "min_objects", "max_objects", "colors", "shapes", "sizes", "backgrounds",
              "held_out_pairs", "held_out_relations", "train_size", "validation_size", "zero_shot_size")]
    vqgan_dir = os.path.dirname(d.vqgan_checkpoint.rstrip("/"))
    clip_variant = "multi," if d.max_objects > 1 else ""
    dalle_dir = os.path.join(root, "dalle")
    out = [
        ("data", "",  # always run: the build reuses a finished dataset in a second
         lambda: _run(["data", "--config", config_spec, *overrides])),
        ("vqgan", os.path.join(d.vqgan_checkpoint, "config.json"),
         lambda: _run(["train", "--config", "configs/vqgan_f4_32.py", "--workdir", vqgan_dir, *world,
                       f"--config.train.max_minutes={minutes['vqgan']}"])),
        ("tokenizer", d.tokenizer_path, lambda: _run(["tokenizer", "train", "--config", config_spec, *overrides])),
        ("encode", os.path.join(d.encoded_dir, "info.json"),
         lambda: _run(["encode", "--config", config_spec, *overrides])),
        ("dalle", os.path.join(dalle_dir, "model", "config.json"),
         lambda: _run(["train", "--config", config_spec, "--workdir", dalle_dir, *overrides,
                       f"--config.train.max_minutes={minutes['dalle']}"])),
        ("clip", os.path.join(root, "clip", "model", "config.json"),
         lambda: _run(["train", "--config", f"configs/clip_shapes.py:{clip_variant}root={root}", "--workdir",
                       os.path.join(root, "clip"), f"--config.train.max_minutes={minutes['clip']}"])),
        ("eval", os.path.join(dalle_dir, "eval", "metrics.json"),
         lambda: _run(["eval", "--config", f"{eval_config}{',' if ':' in eval_config else ':'}root={root}",
                       "--checkpoint", dalle_dir])),
        # Always run (cheap): the best measured settings go into the exported model's sampling section, also for
        # an eval that finished before the section existed.
        ("sampling", "", lambda: write_measured_sampling(dalle_dir)),
        ("samples", os.path.join(root, "samples", "grid.png"),
         lambda: write_samples(dalle_dir, os.path.join(root, "samples"))),
    ]
    return out


def _fmt(v) -> str:
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


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


def write_samples(checkpoint: str, out_dir: str, prompts: Sequence[str] = EXAMPLE_PROMPTS, n: int = 4) -> None:
    """A grid per prompt plus one overview grid, all PNG: n samples per prompt, unfiltered (the README picture),
    with the model's sampling section otherwise (guidance, temperature, top-k, top-p)."""
    import numpy as np

    from dalle import generation

    os.makedirs(out_dir, exist_ok=True)
    gen = generation.Generator.from_checkpoint(checkpoint)
    settings = gen.settings({"candidates": n, "keep": 0, "clip_checkpoint": ""})
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
    p = argparse.ArgumentParser(prog="dalle demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/shapes_tiny.py", help="the text-to-image config (its data paths)")
    p.add_argument("--root", default="outputs/demo", help="where every stage writes")
    # 9 min: the VQGAN's round trip caps what any text-to-image model can draw (6 min: 81% of validation scenes
    # still judged fully correct after encode/decode, 10 min: 94%).
    p.add_argument("--vqgan_minutes", type=float, default=9.0)
    p.add_argument("--dalle_minutes", type=float, default=12.0)
    p.add_argument("--clip_minutes", type=float, default=3.0)
    p.add_argument("--eval_config", default="configs/eval/shapes.py", help="config of the evaluation stage")
    p.add_argument("--only", default="", help="comma-separated stage names to run (default: all)")
    args = p.parse_args(rest)
    spec = args.config
    if args.root != "outputs/demo":
        spec = f"{spec}{',' if ':' in spec else ':'}root={args.root}"
    t0 = time.time()
    only = {s for s in args.only.split(",") if s}
    for name, done_marker, action in stages(spec, args.root, {"vqgan": args.vqgan_minutes,
                                                              "dalle": args.dalle_minutes,
                                                              "clip": args.clip_minutes}, overrides,
                                          args.eval_config):
        if only and name not in only:
            continue
        if done_marker and os.path.exists(done_marker):
            print(f"[demo] {name}: done already ({done_marker})", flush=True)
            continue
        t = time.time()
        print(f"[demo] {name}: running", flush=True)
        action()
        print(f"[demo] {name}: finished in {time.time() - t:.0f} s", flush=True)
    print(f"\n[demo] all stages done in {(time.time() - t0) / 60:.1f} min; outputs in {args.root}/")
    print(f"[demo] try:  .venv/bin/dalle generate \"a red circle\" --checkpoint {args.root}/dalle")
    print(f"[demo] serve: .venv/bin/dalle serve --checkpoint {args.root}/dalle   (http://127.0.0.1:7860)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
