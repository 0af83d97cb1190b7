"""Writes a section of EVAL.md from an eval job's metrics.json (numbers are copied by this script, never typed by
hand). The section is chosen by what the job measured: compositional accuracy -> the shapes world's section,
R-precision -> the emoji section; the other sections of EVAL.md are kept as they are.

    .venv/bin/python tools/eval_report.py outputs/demo/dalle/eval/metrics.json
    .venv/bin/python tools/eval_report.py outputs/emoji/dalle/eval/metrics.json
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTRS = ("color", "shape", "size", "position", "count", "all")


def _f(x, pct=False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.2f}"


def _acc(entry: dict | None) -> str:
    """'92.2% ± 1.9 (n)' of a compositional entry (rate of `all` with its standard error)."""
    if not entry or entry.get("all") is None:
        return "n/a"
    err = entry.get("stderr")
    return f"{100 * entry['all']:.1f}%" + (f" ± {100 * err:.1f}" if err is not None else "")


def _kind_order(kind: str) -> tuple:
    group = ("objects:", "relation:", "count", "background", "held_out:")
    return (next((i for i, g in enumerate(group) if kind.startswith(g)), len(group)), kind)


def _shown(path: str) -> str:
    """A path as the report prints it: relative inside the repository, absolute outside it."""
    rel = os.path.relpath(os.path.abspath(path), ROOT)
    return path if rel.startswith("..") else rel


def _eval_config_shown(metrics: dict) -> str:
    """configs/eval/shapes.py with the variant the job ran (its config name is eval_shapes_<variant>)."""
    name = str((metrics.get("config") or {}).get("name") or "")
    variant = name[len("eval_shapes_"):] if name.startswith("eval_shapes_") else ""
    return "configs/eval/shapes.py" + (f":{variant}" if variant and variant != "full" else "")


def render(metrics: dict, metrics_path: str, extra: str = "", note: str = "",
           title: str = "The shapes world (`dalle demo --config configs/shapes_tiny.py`)",
           svg: str = "docs/eval_fid_vs_clip.svg") -> str:
    """The shapes section: accuracy per split with standard errors, reranked and first sample, per kind of prompt,
    against the tokenizer's round trip; CLIP score and FID per guidance scale."""
    s = metrics["sampling"]
    splits = metrics["prompts"]["splits"]
    scales = sorted(metrics["scales"].items(), key=lambda kv: float(kv[0]))
    written = metrics.get("sampling_written") or {}
    best = f"{written['guidance']:g}" if written.get("guidance") is not None else scales[0][0]
    best_entry = metrics["scales"][best]
    ceiling = metrics.get("tokenizer_ceiling") or {}
    counts = {sp: best_entry["splits"][sp].get("prompts") for sp in splits}
    cand = s["num_candidates"]
    explained = {"paraphrase": "the validation scenes captioned outside the caption grammar, dalle/eval/paraphrase.py",
                 "relations": "validation-stream scenes whose caption states a relation, dalle/eval/compositional.py; "
                              "FID and the all-splits CLIP score count them too"}
    why = "; ".join(f"`{sp}`: {text}" for sp, text in explained.items() if sp in splits)
    lines = [f"## {title}", ""] + ([note, ""] if note else []) + [
             f"Command: `.venv/bin/dalle eval --config {_eval_config_shown(metrics)} --checkpoint "
             f"{_shown(metrics['checkpoint'])}` ({metrics['seconds']:.0f} s), then "
             f"`.venv/bin/python tools/eval_report.py {metrics_path}`.", "",
             f"Prompts: {', '.join(f'{counts[sp]} {sp}' for sp in splits)}{f' ({why})' if why else ''}; "
             f"{cand} candidates per prompt, best {s['keep_top']} kept"
             f"{' by ' + s['reranked_by'] if s['reranked_by'] else ''}; top-k {s['top_k']}, temperature "
             f"{s['temperature']}, seed {s['seed']}. Every rate is the fraction of images with every requested "
             "attribute right (shapes analyzer), ± its standard error. FID network: "
             f"{(metrics['fid_network'] or {}).get('metric', 'none')} "
             f"({(metrics['fid_network'] or {}).get('name', '')}).", ""]
    why = "the exported default" if written.get("guidance") is not None else "the first scale swept"
    lines += [f"### Fully correct at guidance {best} ({why})", "",
              f"| split | first sample (no reranking) | CLIP-best of {cand} | VQGAN round trip of the prompt's scene |",
              "|---|---|---|---|"]
    for sp in splits:
        comp = best_entry["splits"][sp].get("compositional") or {}
        lines.append(f"| {sp} | {_acc(comp.get('first_sample'))} | {_acc(comp)} | {_acc(ceiling.get(sp))} |")
    kinds = sorted({k for sp in splits for k in ((best_entry["splits"][sp].get("compositional") or {})
                                                 .get("by_kind") or {})}, key=_kind_order)
    if kinds:
        lines += ["", f"### By what the prompt asks (guidance {best}; first sample / CLIP-best / round trip, "
                  "images)", "", "| prompt asks | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        for kind in kinds:
            cells = []
            for sp in splits:
                comp = best_entry["splits"][sp].get("compositional") or {}
                k = (comp.get("by_kind") or {}).get(kind)
                if not k:
                    cells.append("")
                    continue
                first = ((comp.get("first_sample") or {}).get("by_kind") or {}).get(kind)
                rt = ((ceiling.get(sp) or {}).get("by_kind") or {}).get(kind)
                pct = lambda e: "n/a" if not e or e.get("all") is None else f"{100 * e['all']:.0f}%"  # noqa: E731
                cells.append(f"{pct(first)} / {pct(k)} / {pct(rt)} ({k['images'] // max(1, s['keep_top'])})")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    drawn = ((best_entry["splits"].get("zero_shot") or {}).get("compositional") or {}).get("held_out_drawn")
    if drawn:
        lines += ["", f"### What the model draws for a held-out pair (zero_shot, first samples, guidance {best})", "",
                  "The object the analyzer finds in the pair's cell: does the colour word or the shape word win?", "",
                  "| held-out pair | drawn (images) |", "|---|---|"]
        for pair, counts in drawn.items():
            total = sum(counts.values())
            top = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in
                            sorted(counts.items(), key=lambda kv: -kv[1])[:4])
            lines.append(f"| {pair} | {top} ({total}) |")
    lines += ["", "### Per attribute and guidance scale (CLIP-best candidate)", "",
              "| guidance scale | split | " + " | ".join(ATTRS) + " | first sample |",
              "|---|---|" + "---|" * (len(ATTRS) + 1)]
    for scale, entry in scales:
        for split, e in entry["splits"].items():
            comp = e.get("compositional", {})
            lines.append(f"| {scale} | {split} | " + " | ".join(_f(comp.get(a), True) for a in ATTRS)
                         + f" | {_acc(comp.get('first_sample'))} |")
    if ceiling:
        lines += ["", "What the image tokenizer alone loses: the prompts' own scenes rendered, encoded and decoded by "
                  "the model's VQGAN, judged by the same analyzer (not a strict ceiling: a prompt fixes only what it "
                  "names, and a model may draw an easier scene than the reference):", "",
                  "| | split | " + " | ".join(ATTRS) + " |", "|---|---|" + "---|" * len(ATTRS)]
        for split, comp in ceiling.items():
            lines.append(f"| VQGAN round trip | {split} | " + " | ".join(_f(comp.get(a), True) for a in ATTRS) + " |")
    lines += ["", "### CLIP score and FID across guidance scales", "",
              "| guidance scale | CLIP score (all splits) | " + " | ".join(
                  f"CLIP score {sp}" for sp in splits) + " | FID | KID |",
              "|---|---|" + "---|" * len(splits) + "---|---|"]
    for scale, entry in scales:
        per = [_f(entry["splits"][sp].get("clip_score", {}).get("clip_score")) for sp in splits]
        fid = entry["fid"]
        kid = entry["kid"]
        lines.append(f"| {scale} | {_f(entry['clip_score'].get('clip_score'))} | " + " | ".join(per)
                     + f" | {_f(fid.get('value'))} {fid.get('metric', '')} | "
                     + (f"{kid['value']:.4f}" if kid.get("value") is not None else "n/a") + " |")
    lines += ["", f"![FID against CLIP score across guidance scales]({svg})", ""]
    lines += completion_table(metrics.get("completion"))
    if metrics.get("notes"):
        lines += ["Notes from the job:", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    lines += [extra] if extra else []
    return "\n".join(lines) + "\n"


def completion_table(entry: dict | None) -> list[str]:
    """The image-completion section (dalle/eval/completion.py), when the job measured it on eligible scenes."""
    if not entry or not entry.get("splits"):
        return []
    rate = lambda r: "n/a" if r[0] is None else f"{100 * r[0]:.1f}% ± {100 * r[1]:.1f}"  # noqa: E731
    lines = [f"### Image completion (guidance {entry['scale']:g}, first sample)", "",
             f"Each scene with objects in the grid's top row and below it: its top {entry['keep_rows']} of "
             f"{entry['code_rows']} code rows kept, the rest drawn to match the full caption. Kept: the top-row "
             "objects are still exactly there; caption: everything the caption asks is true; without the image: the "
             "same caption and seed sampled from nothing.", "",
             "| split | prompts | kept object survives | caption right | both | caption right without the image |",
             "|---|---|---|---|---|---|"]
    for split, e in entry["splits"].items():
        lines.append(f"| {split} | {e['prompts']} | {rate(e['kept'])} | {rate(e['caption'])} | {rate(e['both'])} | "
                     f"{rate(e['caption_without_image'])} |")
    return lines + [""]


def _pct(entry: dict | None, key: str = "r1") -> str:
    if not entry or entry.get(key) is None:
        return "n/a"
    err = entry.get("stderr") if key in ("r1", "accuracy") else None
    return f"{100 * entry[key]:.1f}%" + (f" ± {100 * err:.1f}" if err is not None else "")


def render_emoji(metrics: dict, metrics_path: str, extra: str = "", note: str = "",
                 title: str = "Real images: the emoji model") -> str:
    """The emoji section: goals, R-precision against its ceilings, zero-shot skin tone and style, CLIP score, FID."""
    s = metrics["sampling"]
    splits = metrics["prompts"]["splits"]
    scales = sorted(metrics["scales"].items(), key=lambda kv: float(kv[0]))
    ceil = metrics.get("ceilings", {})
    rp = ceil.get("r_precision", {})
    fidelity = metrics.get("tokenizer_fidelity", {})
    counts = {sp: next(iter(metrics["scales"].values()))["splits"][sp]["prompts"] for sp in splits}
    lines = [f"## {title}", ""] + ([note, ""] if note else []) + [
        f"Command: `.venv/bin/dalle eval --config configs/eval/emoji.py --checkpoint "
        f"{_shown(metrics['checkpoint'])}` ({metrics['seconds']:.0f} s), then "
        f"`.venv/bin/python tools/eval_report.py {metrics_path}`.", "",
        f"Prompts: the first caption of each image, {', '.join(f'{counts[sp]} {sp}' for sp in splits)}; "
        f"{s['num_candidates']} candidates per prompt, best {s['keep_top']} kept"
        f"{' by ' + s['reranked_by'] if s['reranked_by'] else ''}; top-k {s['top_k']}, temperature "
        f"{s['temperature']}, seed {s['seed']}. CLIP: {metrics['clip_backbone']} (configs/clip_emoji.py, trained on "
        "the train split only). R@1: the true caption ranked first among 100 (99 captions of other emoji); chance 1%.",
        ""]
    best = max(scales, key=lambda kv: (kv[1]["splits"].get("validation", {}).get("r_precision") or {}).get("r1")
               or -1)
    v_real = (rp.get("validation") or {}).get("real", {}).get("r1")
    v_rec = (rp.get("validation") or {}).get("reconstructed", {}).get("r1")
    v_gen = (best[1]["splits"].get("validation", {}).get("r_precision") or {}).get("r1")
    zs = best[1]["splits"].get("zero_shot", {})
    ratio = lambda a, b: "n/a" if a is None or not b else f"{100 * a / b:.0f}% of the ceiling"  # noqa: E731
    fid_v = fidelity.get("validation", {})
    lines += ["### Goals", "", "| goal | measured |", "|---|---|",
              f"| generated R@1 (validation) >= 50% of real | {_pct({'r1': v_gen})} at guidance {best[0]}: "
              f"{ratio(v_gen, v_real)} ({_pct({'r1': v_real})} real) |",
              f"| reconstructions R@1 >= 90% of real | {_pct({'r1': v_rec})}: {ratio(v_rec, v_real)} |",
              f"| zero-shot skin tone >= 70% right | {_pct(zs.get('skin_tone', {}).get('zero_shot'), 'accuracy')} |",
              f"| zero-shot style (reported) | {_pct(zs.get('style', {}).get('zero_shot'), 'accuracy')} |",
              "| VQGAN validation PSNR >= 25 dB | "
              + (f"{fid_v['psnr']:.1f} dB ({fid_v['images']} images)" if fid_v else "n/a") + " |",
              "| >= 50% of VQGAN codes used | "
              + (f"{100 * fid_v['codebook_usage']:.0f}% ({fid_v['codes_used']} of {fid_v['codebook_size']}, "
                 f"validation images)" if fid_v else "n/a") + " |", ""]
    lines += ["### R-precision (R@1) per split", "",
              "| images | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for label, key in (("real (ceiling)", "real"), ("VQGAN round trip", "reconstructed")):
        lines.append(f"| {label} | " + " | ".join(_pct((rp.get(sp) or {}).get(key)) for sp in splits) + " |")
    for scale, entry in scales:
        row = [entry["splits"][sp].get("r_precision") or {} for sp in splits]
        lines.append(f"| generated, guidance {scale}, CLIP-best of {s['num_candidates']} | "
                     + " | ".join(_pct(r) for r in row) + " |")
        lines.append(f"| generated, guidance {scale}, first sample | "
                     + " | ".join(_pct({"r1": r.get("r1_first_sample"), "stderr": r.get("stderr_first_sample")})
                                  for r in row) + " |")
    for name, label in (("skin_tone", "Skin tone"), ("style", "Vendor style")):
        c = ceil.get(name, {})
        reader = next((e["splits"][sp][name] for _, e in scales for sp in splits
                       if (e["splits"][sp].get(name) or {}).get("reader_validation_accuracy") is not None), {})
        lines += ["", f"### {label} read back (classifier fitted on the train split; "
                  f"{_pct({'accuracy': reader.get('reader_validation_accuracy')}, 'accuracy')} right on "
                  f"{reader.get('reader_validation_count', 'n/a')} real validation images)", "",
                  "| images | " + " | ".join(f"{sp}: all asked | {sp}: held-out combinations" for sp in splits) + " |",
                  "|---|" + "---|---|" * len(splits)]
        for lab, key in (("real", "real"), ("VQGAN round trip", "reconstructed")):
            cells = []
            for sp in splits:
                e = (c.get(sp) or {}).get(key) or {}
                cells += [_pct(e, "accuracy"), _pct(e.get("zero_shot"), "accuracy")]
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        for scale, entry in scales:
            cells = []
            for sp in splits:
                e = entry["splits"][sp].get(name) or {}
                cells += [_pct(e, "accuracy"), _pct(e.get("zero_shot"), "accuracy")]
            lines.append(f"| generated, guidance {scale} | " + " | ".join(cells) + " |")
    lines += ["", "### CLIP score and FID-CLIP", "", "| guidance scale | " + " | ".join(
        f"CLIP score {sp}" for sp in splits) + " | FID (all prompts' real images) |", "|---|" + "---|" * (len(splits) + 1)]
    for scale, entry in scales:
        per = [_f((entry["splits"][sp].get("clip_score") or {}).get("clip_score")) for sp in splits]
        fid = entry.get("fid") or {}
        lines.append(f"| {scale} | " + " | ".join(per) + f" | {_f(fid.get('value'))} {fid.get('metric', '')} |")
    if metrics.get("notes"):
        lines += ["", "Notes from the job:", ""] + [f"- {n}" for n in metrics["notes"]]
    lines += ["", extra] if extra else []
    return "\n".join(lines) + "\n"


def emoji_summary(metrics: dict) -> str:
    """The README's line under the emoji sample grid (between its <!-- eval:emoji-summary --> markers)."""
    rp = metrics.get("ceilings", {}).get("r_precision", {}).get("validation", {})
    scales = metrics["scales"]
    best = max(scales, key=lambda k: (scales[k]["splits"].get("validation", {}).get("r_precision") or {}).get("r1")
               or -1)
    val = scales[best]["splits"].get("validation", {})
    zs = scales[best]["splits"].get("zero_shot", {})
    fid = metrics.get("tokenizer_fidelity", {}).get("validation", {})
    return (f"*Measured by `dalle eval --config configs/eval/emoji.py` ([EVAL.md](EVAL.md)): R@1 on validation "
            f"captions (true caption first among 100, chance 1%) {_pct(val.get('r_precision'))} for generated images "
            f"at guidance {best}, {_pct(rp.get('reconstructed'))} for VQGAN round trips, {_pct(rp.get('real'))} for "
            f"the real images; held-out skin-tone prompts drawn with the asked tone "
            f"{_pct((zs.get('skin_tone') or {}).get('zero_shot'), 'accuracy')}, held-out vendor styles "
            f"{_pct((zs.get('style') or {}).get('zero_shot'), 'accuracy')}"
            + (f"; VQGAN validation PSNR {fid['psnr']:.1f} dB" if fid else "") + ".*")


def _shown_scale(m: dict) -> str:
    """The guidance a run is shown at: the one given with its metrics path (`LABEL=PATH@G`, kept under
    `shown_guidance`), else its exported one; for a checkpoint step part way through a run (no export), the scale
    its export would have been given."""
    from dalle import model_dir
    from dalle.eval import main as eval_main

    if m.get("shown_guidance") is not None:
        return m["shown_guidance"]
    written = m.get("sampling_written") or {}
    g = f"{written['guidance']:g}" if written.get("guidance") is not None else next(iter(m["scales"]))
    best = eval_main.best_scale(m)
    if model_dir.checkpoint_step(m["checkpoint"]) is not None and best is not None:
        g = f"{best[0]:g}"
    return g


def read_run(item: str) -> tuple[str, dict]:
    """`LABEL=METRICS[@G]` -> (label, metrics); `@G` shows the run at guidance G (one of the scales it measured),
    for a job that wrote no guidance of its own (eval.write_sampling false)."""
    label, _, path = item.partition("=")
    guidance = None
    head, at, tail = path.rpartition("@")
    if at and re.fullmatch(r"[0-9.]+", tail):
        path, guidance = head, tail
    with open(path) as f:
        m = json.load(f)
    if guidance is not None:
        scales = {f"{float(k):g}": k for k in m["scales"]}
        if f"{float(guidance):g}" not in scales:
            raise ValueError(f"{item!r}: guidance {guidance} was not measured (scales: {', '.join(m['scales'])})")
        m["shown_guidance"] = scales[f"{float(guidance):g}"]
    return label, m


def render_kinds(runs: list[tuple[str, dict]]) -> list[str]:
    """Per run (columns), what each prompt kind of each split (rows) gets fully right at the run's shown guidance:
    the multi-object world's goals are per kind (two objects, relations, held-out pairs), not per split."""
    rows: dict[tuple[str, str], list[str]] = {}
    splits = list(dict.fromkeys(sp for _, m in runs for sp in m["prompts"]["splits"]))
    for i, (_, m) in enumerate(runs):
        entry = m["scales"][_shown_scale(m)]
        for sp in splits:
            comp = (entry["splits"].get(sp) or {}).get("compositional") or {}
            first = (comp.get("first_sample") or {}).get("by_kind") or {}
            for kind, best in (comp.get("by_kind") or {}).items():
                cells = rows.setdefault((sp, kind), ["" for _ in runs])
                f = first.get(kind)
                cells[i] = (f"{100 * f['all']:.0f}% / " if f and f.get("all") is not None else "n/a / ") + \
                    (f"{100 * best['all']:.0f}% ({best.get('images', '?')})" if best.get("all") is not None else "n/a")
    ordered = sorted(rows, key=lambda k: (splits.index(k[0]), _kind_order(k[1])))
    lines = ["", "### By what the prompt asks (each run at its guidance above; first sample / CLIP-best (images))", "",
             "| split: prompt asks | " + " | ".join(label for label, _ in runs) + " |",
             "|---|" + "---|" * len(runs)]
    lines += [f"| {sp}: {kind} | " + " | ".join(rows[(sp, kind)]) + " |" for sp, kind in ordered]
    return lines


def render_experiments(runs: list[tuple[str, dict]], command: str, note: str = "",
                       title: str = "Composition experiments on the one-object shapes world",
                       by_kind: bool = False) -> str:
    """One table over several eval jobs (runs labelled `name` or `name (seed N)`): fully correct per split at each
    run's exported guidance (for a checkpoint step part way through a run, its best measured scale), first sample
    and CLIP-best; runs sharing a name get a mean and spread row; `by_kind` adds the per-kind table."""
    from dalle.train import reporting

    splits = list(dict.fromkeys(sp for _, m in runs for sp in m["prompts"]["splits"]))
    lines = [f"## {title}", ""] + ([note, ""] if note else []) + [
        f"Command: `{command}`, from each run's `dalle eval --config configs/eval/shapes.py` metrics.json. Cells: "
        "first sample (no reranking) / CLIP-best of the candidates, fully correct, ± standard error.", "",
        "| run | steps | training minutes | guidance | temperature | " + " | ".join(splits) + " |",
        "|---|---|---|---|---|" + "---|" * len(splits)]
    groups: dict[str, list[dict]] = {}
    for label, m in runs:
        g = _shown_scale(m)
        entry = m["scales"][g]
        t = reporting.run_summary(m["checkpoint"])
        cells, values = [], {}
        for sp in splits:
            comp = (entry["splits"].get(sp) or {}).get("compositional") or {}
            cells.append(f"{_acc(comp.get('first_sample'))} / {_acc(comp)}")
            values[sp] = ((comp.get("first_sample") or {}).get("all"), comp.get("all"))
        minutes = f"{t['minutes']:.1f}" if t["minutes"] else "n/a"
        temperature = (m.get("sampling") or {}).get("temperature")
        lines.append(f"| {label} | {t['steps']} | {minutes} | {g} | {temperature} | " + " | ".join(cells) + " |")
        groups.setdefault(label.split(" (seed")[0], []).append(values)
    for name, members in groups.items():
        if len(members) < 2:
            continue
        cells = []
        for sp in splits:
            parts = []
            for k in (0, 1):
                v = [m[sp][k] for m in members if m.get(sp) and m[sp][k] is not None]
                parts.append(f"{100 * sum(v) / len(v):.1f}% (±{50 * (max(v) - min(v)):.1f})" if v else "n/a")
            cells.append(" / ".join(parts))
        lines.append(f"| **{name}: mean of {len(members)} seeds (± half range)** | | | | | " + " | ".join(cells)
                     + " |")
    if by_kind:
        lines += render_kinds(runs)
    return "\n".join(lines) + "\n"


HEADER = "# Evaluation\n\nEach section is written by `tools/eval_report.py` from the metrics.json of the eval job it names.\n"


def render_comparison(report: dict, path: str, note: str = "") -> str:
    """The methods-side-by-side section from `dalle eval compare`'s compare.json."""
    splits = report["prompts"]["splits"]
    pct = lambda s: "n/a" if not s or s.get("all") is None else (  # noqa: E731
        f"{100 * s['all']:.1f}% ± {100 * (s.get('stderr') or 0):.1f}")
    lines = ["## The seed's ways to draw from text, side by side", ""] + ([note, ""] if note else []) + [
        f"Command: `.venv/bin/dalle eval compare --config ...`, then `.venv/bin/python tools/eval_report.py "
        f"--compare {path}`. {report['prompts']['per_split']} prompts per split, one sample per prompt (no "
        "reranking); fully correct = every attribute the caption asks (shapes analyzer), ± its standard error. CLIP "
        f"score by {report.get('clip_checkpoint') or 'no CLIP'} (* = that CLIP also guided the method: self-scored). "
        "Seconds per image on this machine after the first batch (which compiles).", "",
        "| method | guidance | " + " | ".join(f"fully correct {sp}" for sp in splits)
        + " | CLIP score | FID | s / image | training min |", "|---|---|" + "---|" * len(splits) + "---|---|---|---|"]
    for r in report["methods"]:
        clip = "n/a" if r["clip_score"] is None else f"{r['clip_score']:.2f}{'*' if r['clip_self_scored'] else ''}"
        fid = "n/a" if r["fid"] is None else f"{r['fid']:.2f} {r['fid_metric'] or ''}".strip()
        spi = "n/a" if r["seconds_per_image"] is None else f"{r['seconds_per_image']:.3f}"
        minutes = "none" if r["training_minutes"] is None else f"{r['training_minutes']:.1f}"
        lines.append(f"| {r['name']} | {r['guidance']:g} | " + " | ".join(pct(r["splits"].get(sp)) for sp in splits)
                     + f" | {clip} | {fid} | {spi} | {minutes} |")
    return "\n".join(lines) + "\n"


def replace_section(document: str, name: str, body: str) -> str:
    """EVAL.md with section `name` (between <!-- eval:name --> markers) replaced by `body`, the others kept."""
    begin, end = f"<!-- eval:{name} -->", f"<!-- /eval:{name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    if not document.strip():
        return HEADER + "\n" + block
    if begin in document and end in document:
        head, rest = document.split(begin, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    return document.rstrip() + "\n\n" + block


def write_section(name: str, body: str, target: str = "") -> None:
    """Puts `body` in section `name` of EVAL.md (or `target`), appended when new: every report tool writes here."""
    target = target or os.path.join(ROOT, "EVAL.md")
    document = open(target).read() if os.path.exists(target) else ""
    with open(target, "w") as f:
        f.write(replace_section(document, name, body))
    print(f"wrote the {name} section of {os.path.basename(target)}")


def _option(argv: list[str], name: str) -> tuple[str, list[str]]:
    if name not in argv:
        return "", argv
    i = argv.index(name)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def main(argv: list[str]) -> int:
    """METRICS [--note TEXT] [--section NAME --title TEXT]: --section writes another model of the same kind (e.g. a
    variant) into its own section; only the default sections update the README. `--experiments LABEL=METRICS...`
    writes the composition-experiments table over several runs instead (into another section and title with
    --section/--title; `--by-kind` adds a table per prompt kind); `--compare FILE` the table of `dalle eval compare`."""
    note, argv = _option(argv, "--note")
    section, argv = _option(argv, "--section")
    title, argv = _option(argv, "--title")
    by_kind = "--by-kind" in argv
    argv = [a for a in argv if a != "--by-kind"]
    if argv and argv[0] == "--experiments":  # --experiments "label=metrics.json" ...: the composition table
        runs = [read_run(item) for item in argv[1:]]
        command = (".venv/bin/python tools/eval_report.py --experiments " + " ".join(f'"{a}"' for a in argv[1:])
                   + (f' --section {section} --title "{title}"' if section else "") + (" --by-kind" if by_kind else ""))
        write_section(section or "composition-experiments",
                      render_experiments(runs, command, note, *([title] if title else []), by_kind=by_kind))
        return 0
    if argv and argv[0] == "--compare":  # --compare compare.json: the methods side by side
        with open(argv[1]) as f:
            write_section("method-comparison", render_comparison(json.load(f), argv[1], note))
        return 0
    path = argv[0] if argv else "outputs/demo/dalle/eval/metrics.json"
    with open(path) as f:
        metrics = json.load(f)
    out_dir = os.path.dirname(path)
    first = next(iter(metrics["scales"].values()))
    kind = "emoji" if any("r_precision" in e for e in first["splits"].values()) else "shapes"
    prefix = f"eval_{section}_" if section else ("eval_emoji_" if kind == "emoji" else "eval_")
    os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
    svg = os.path.join(out_dir, "fid_vs_clip.svg")
    if os.path.exists(svg) and kind == "shapes":
        shutil.copy(svg, os.path.join(ROOT, "docs", f"{prefix}fid_vs_clip.svg"))
    grids = sorted(os.listdir(os.path.join(out_dir, "grids"))) if os.path.isdir(os.path.join(out_dir, "grids")) else []
    best = metrics.get("sampling_written", {}).get("guidance")
    wanted = (f"s{best:g}_",) if best is not None else ("s1_",)
    extra = ""
    for g in grids:
        if g.startswith(wanted):
            shutil.copy(os.path.join(out_dir, "grids", g), os.path.join(ROOT, "docs", f"{prefix}{g}"))
            extra += f"![{g}](docs/{prefix}{g})\n"
    samples = ("### Samples (one row per prompt: the kept image" + ("s" if kind == "shapes" else "") + ")\n\n"
               + extra) if extra else ""
    completion_grid = "completion_validation.png"
    if (metrics.get("completion") or {}).get("splits") and completion_grid in grids:
        shutil.copy(os.path.join(out_dir, "grids", completion_grid),
                    os.path.join(ROOT, "docs", f"{prefix}{completion_grid}"))
        samples += ("\n### Image completion samples (validation; per row: the scene, its completion from the kept "
                    "top rows, the same caption and seed without the image)\n\n"
                    f"![{completion_grid}](docs/{prefix}{completion_grid})\n")
    # The command line shown in the section: the arguments that write this section again (not the note).
    shown = path + (f" --section {section}" if section else "") + (f" --title {shlex.quote(title)}" if title else "")
    if kind == "emoji":
        body = render_emoji(metrics, shown, samples, note, title or "Real images: the emoji model")
    else:
        body = render(metrics, shown, samples, note, *([title] if title else []),
                      svg=f"docs/{prefix}fid_vs_clip.svg")
    write_section(section or kind, body)
    if kind == "emoji" and not section:
        readme = os.path.join(ROOT, "README.md")
        text = open(readme).read()
        begin, end = "<!-- eval:emoji-summary -->", "<!-- /eval:emoji-summary -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            with open(readme, "w") as f:
                f.write(f"{head}{begin}\n{emoji_summary(metrics)}\n{end}{rest.split(end, 1)[1]}")
            print("wrote the emoji summary in README.md")
        grid = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(path)))), "samples",
                            "grid.png")
        if os.path.exists(grid):
            shutil.copy(grid, os.path.join(ROOT, "docs", "emoji_samples.png"))
            print(f"copied {grid} to docs/emoji_samples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
