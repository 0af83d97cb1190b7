"""What an image tokenizer keeps of the shapes world: each eval prompt's own scene rendered, encoded and decoded by a
VQGAN, then read back by the shapes analyzer (dalle/eval/analyzer.py). No text-to-image model can be judged right
more often than its tokenizer's round trip allows, so this compares VQGAN recipes before any DALL·E is trained.
Writes the `composition-tokenizer` section of EVAL.md (numbers copied from the measurement, never typed).

    .venv/bin/python tools/tokenizer_ceiling.py [--data configs/shapes_tiny.py] [--prompts 400] \\
        "label=outputs/demo/vqgan" "other label=/tmp/vq2/"...

Another world's table goes into its own section: e.g. `--data configs/shapes_tiny.py:multi_dalle_bart
--splits validation,zero_shot,relations --section composition-tokenizer-multi --title "..."`.

Each VQGAN is a trainer workdir (its `model/` export and `metrics.jsonl` give codes, steps and minutes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPLITS = ("validation", "zero_shot")  # the default; dalle.eval.compositional names the others
DEFAULT_TITLE = "Composition: what the image tokenizer keeps"  # the one-object section's title


def _record(workdir: str) -> dict:
    """Steps, minutes and the last logged PSNR of the VQGAN's trainer workdir."""
    from dalle.train import reporting

    run = reporting.run_summary(workdir, "train/psnr")
    return {"steps": run["steps"], "minutes": run["minutes"], "psnr": run["last"]}


def measure(data, vqgan_dir: str, prompts_per_split: int, splits: tuple[str, ...] = SPLITS) -> dict:
    from dalle import kinds
    from dalle.eval import analyzer, compositional
    from dalle.modeling.clip.model import to_uint8

    export = os.path.join(vqgan_dir, "model") if os.path.isdir(os.path.join(vqgan_dir, "model")) else vqgan_dir
    vq = kinds.load_image_tokenizer(export)
    trained = {}
    if os.path.isfile(os.path.join(vqgan_dir, "config.json")):  # the trainer's config (its data section)
        with open(os.path.join(vqgan_dir, "config.json")) as f:
            trained = json.load(f)
    an = analyzer.get_analyzer(data)
    out = {"codes": int(vq.codebook_size),
           "held_out_pairs_in_training": list((trained.get("data") or {}).get("held_out_pairs", ["?"])),
           "foreground_weight": (trained.get("vqgan_loss") or {}).get("foreground_weight", 0.0),
           **_record(vqgan_dir), "splits": {}}
    for split in splits:
        prompts = compositional.shapes_prompts(data, split, prompts_per_split)
        images = compositional.render_prompts(data, prompts)
        rt = np.concatenate([to_uint8(np.clip(vq.decode(vq.encode(images[i:i + 64])), 0, 1))
                             for i in range(0, len(images), 64)])
        acc = compositional.accuracy(rt, [p.request for p in prompts], data,
                                     [compositional.prompt_kinds(p.request, p.scene) for p in prompts])
        confusions = collections.Counter()
        for p, image in zip(prompts, rt):
            found = {o.cell: o for o in an.analyze_scene(image).objects}
            for o in p.scene.objects:
                d = found.get(o.cell)
                if d is None:
                    confusions[f"{o.size} {o.color} {o.shape} -> nothing"] += 1
                elif (d.color, d.shape, d.size) != (o.color, o.shape, o.size):
                    confusions[f"{o.size} {o.color} {o.shape} -> {d.size} {d.color} {d.shape}"] += 1
        acc["confusions"] = confusions.most_common(3)
        out["splits"][split] = acc
    return out


def render(rows: list[tuple[str, dict]], command: str, prompts: int, note: str = "",
           splits: tuple[str, ...] = SPLITS, title: str = DEFAULT_TITLE) -> str:
    lines = [f"## {title}", ""] + ([note, ""] if note else []) + [
             f"Command: `{command}`.", "",
             f"The first {prompts} prompts of each split: their scenes rendered, encoded and decoded by each VQGAN, "
             "judged by the shapes analyzer (fully correct = every attribute the caption names). Clean renders score "
             "100% on every split.", "",
             "| VQGAN | codes | held-out pairs in its training images | foreground weight | steps | minutes | "
             "train PSNR | "
             + " | ".join(f"round trip {s}" for s in splits) + " | most frequent confusions (validation) |",
             "|---|---|---|---|---|---|---|" + "---|" * len(splits) + "---|"]
    for label, r in rows:
        held = "none (all pairs seen)" if not r["held_out_pairs_in_training"] else "held out"
        cells = []
        for s in splits:
            e = r["splits"][s]
            cells.append(f"{100 * e['all']:.1f}% ± {100 * e['stderr']:.1f}")
        conf = "; ".join(f"{k} ({v})" for k, v in r["splits"]["validation"]["confusions"])
        minutes = f"{r['minutes']:.1f}" if r["minutes"] else "n/a"
        psnr = f"{r['psnr']:.1f} dB" if r["psnr"] else "n/a"
        lines.append(f"| {label} | {r['codes']} | {held} | {r['foreground_weight'] or 0:g} | {r['steps']} | {minutes} | "
                     f"{psnr} | "
                     + " | ".join(cells) + f" | {conf} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="configs/shapes_tiny.py", help="config whose data section is the world")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--no_write", action="store_true", help="print the section instead of writing EVAL.md")
    p.add_argument("--note", default="", help="a paragraph under the title (what the table shows)")
    p.add_argument("--splits", default=",".join(SPLITS), help="comma-separated eval splits to measure")
    p.add_argument("--section", default="composition-tokenizer", help="the EVAL.md section to write")
    p.add_argument("--title", default=DEFAULT_TITLE)
    p.add_argument("vqgans", nargs="+", help="label=workdir")
    args = p.parse_args(argv)
    from dalle import config as config_lib
    from tools import eval_report

    data = config_lib.load_config(args.data, []).data
    splits = tuple(x for x in args.splits.split(",") if x)
    rows = []
    for item in args.vqgans:
        label, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"error: {item!r} is not label=workdir")
        t = time.time()
        rows.append((label, measure(data, path, args.prompts, splits)))
        print(f"{label}: " + ", ".join(f"{s} {100 * rows[-1][1]['splits'][s]['all']:.1f}%" for s in splits)
              + f" ({time.time() - t:.0f} s)")
    command = ".venv/bin/python tools/tokenizer_ceiling.py " + " ".join(
        f'"{a}"' if ("=" in a or " " in a) else a for a in argv if a not in (args.note,) and a != "--note")
    body = render(rows, command, args.prompts, args.note, splits, args.title)
    if args.no_write:
        print(body)
        return 0
    eval_report.write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
