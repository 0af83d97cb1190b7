"""Writes EVAL.md from an eval job's metrics.json (numbers are copied by this script, never typed by hand).

    .venv/bin/python tools/eval_report.py outputs/demo/dalle/eval/metrics.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTRS = ("color", "shape", "size", "position", "count", "all")


def _f(x, pct=False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def render(metrics: dict, metrics_path: str, extra: str = "", note: str = "") -> str:
    s = metrics["sampling"]
    lines = ["# Evaluation of the demo model", ""] + ([note, ""] if note else []) + [
             f"Command: `.venv/bin/dalle eval --config configs/eval/shapes.py --checkpoint "
             f"{os.path.relpath(metrics['checkpoint'], ROOT)}` ({metrics['seconds']:.0f} s), then "
             f"`.venv/bin/python tools/eval_report.py {metrics_path}`.", "",
             f"Prompts: {metrics['prompts']['per_split']} per split ({', '.join(metrics['prompts']['splits'])}); "
             f"{s['num_candidates']} candidates per prompt, best {s['keep_top']} kept"
             f"{' by ' + s['reranked_by'] if s['reranked_by'] else ''}; top-k {s['top_k']}, temperature "
             f"{s['temperature']}, seed {s['seed']}. CLIP backbone: {metrics['clip_backbone']}. "
             f"FID network: {(metrics['fid_network'] or {}).get('metric', 'none')} "
             f"({(metrics['fid_network'] or {}).get('name', '')}, reference: "
             f"{(metrics['fid_network'] or {}).get('reference_count')} rendered scenes of the same prompts).", ""]
    lines += ["## Compositional accuracy (shapes analyzer; fraction of images with every requested attribute right)",
              "", "| guidance scale | split | " + " | ".join(ATTRS) + " |", "|---|---|" + "---|" * len(ATTRS)]
    for scale, entry in sorted(metrics["scales"].items(), key=lambda kv: float(kv[0])):
        for split, e in entry["splits"].items():
            comp = e.get("compositional", {})
            lines.append(f"| {scale} | {split} | " + " | ".join(_f(comp.get(a), True) for a in ATTRS) + " |")
    if metrics.get("tokenizer_ceiling"):
        lines += ["", "What the image tokenizer alone loses: the prompts' own reference scenes rendered, encoded and "
                  "decoded by the model's VQGAN, judged by the same analyzer. Not a strict ceiling: a prompt fixes "
                  "only what it names, and a model may draw an easier scene (e.g. a larger shape) than the reference:",
                  "",
                  "| | split | " + " | ".join(ATTRS) + " |", "|---|---|" + "---|" * len(ATTRS)]
        for split, comp in metrics["tokenizer_ceiling"].items():
            lines.append(f"| VQGAN round trip | {split} | " + " | ".join(_f(comp.get(a), True) for a in ATTRS) + " |")
    lines += ["", "## CLIP score and FID across guidance scales", "",
              "| guidance scale | CLIP score (all splits) | " + " | ".join(
                  f"CLIP score {sp}" for sp in metrics["prompts"]["splits"]) + " | FID | KID |",
              "|---|---|" + "---|" * len(metrics["prompts"]["splits"]) + "---|---|"]
    for scale, entry in sorted(metrics["scales"].items(), key=lambda kv: float(kv[0])):
        per = [_f(entry["splits"][sp].get("clip_score", {}).get("clip_score")) for sp in metrics["prompts"]["splits"]]
        fid = entry["fid"]
        kid = entry["kid"]
        lines.append(f"| {scale} | {_f(entry['clip_score'].get('clip_score'))} | " + " | ".join(per)
                     + f" | {_f(fid.get('value'))} {fid.get('metric', '')} | "
                     + (f"{kid['value']:.4f}" if kid.get("value") is not None else "n/a") + " |")
    lines += ["", "![FID against CLIP score across guidance scales](docs/eval_fid_vs_clip.svg)", ""]
    if metrics.get("notes"):
        lines += ["Notes from the job:", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    lines += [extra] if extra else []
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    note = ""
    if "--note" in argv:
        i = argv.index("--note")
        note, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    path = argv[0] if argv else "outputs/demo/dalle/eval/metrics.json"
    with open(path) as f:
        metrics = json.load(f)
    out_dir = os.path.dirname(path)
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    svg = os.path.join(out_dir, "fid_vs_clip.svg")
    if os.path.exists(svg):
        shutil.copy(svg, os.path.join(ROOT, "docs", "eval_fid_vs_clip.svg"))
    grids = sorted(os.listdir(os.path.join(out_dir, "grids"))) if os.path.isdir(os.path.join(out_dir, "grids")) else []
    extra = ""
    for g in grids:
        if g.startswith("s3_") or g.startswith("s2_"):
            shutil.copy(os.path.join(out_dir, "grids", g), os.path.join(ROOT, "docs", f"eval_{g}"))
            extra += f"![{g}](docs/eval_{g})\n"
    with open(os.path.join(ROOT, "EVAL.md"), "w") as f:
        f.write(render(metrics, path, ("## Samples (one row per prompt)\n\n" + extra) if extra else "", note))
    print("wrote EVAL.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
