"""`dalle eval compare`: several ways to draw from text, side by side on the same prompts with the same metrics.

    dalle eval compare --config eval/compare_shapes:root=outputs/demo

Each entry of `compare.methods` names a method and what it needs; every method is measured by one run of the eval
job (dalle/eval/main.py `run`) on the same prompts, with one sample per prompt (no reranking):
  * `autoregressive`: a DALL·E model (`checkpoint`: model dir or workdir; its VQGAN or dVAE decodes), at the
    guidance `scale` (None: its sampling section's);
  * `clip-guided`: VQGAN latents optimised against a CLIP (`vqgan`, `clip`, `steps`; dalle/clip_guided.py);
  * `gan`: a text-conditional GAN (`checkpoint`; dalle/modeling/gan/).
It reports, per method: fully correct per split (the shapes analyzer) with standard errors, CLIP score (marked
self-scored when the scoring CLIP is the one that guided), FID(-CLIP), seconds per image on this machine (after
the first batch, which compiles) and training minutes (`dalle.train.reporting.run_summary` of `workdir`). Written
to <output_dir>/compare.json; `tools/eval_report.py --compare FILE` turns it into the EVAL.md table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.cli.args import Parser


class TimedGenerator:
    """Wraps a generator callable (captions, scale, rng) -> uint8 [P * N, H, W, 3] and times its calls."""

    def __init__(self, fn: Callable[[Sequence[str], float, Any], np.ndarray], data: Any, settings: Any = None):
        self.fn, self.data, self.settings = fn, data, settings
        self.calls: list[tuple[float, int]] = []  # (seconds, images) per call

    def __call__(self, captions: Sequence[str], scale: float, rng: Any) -> np.ndarray:
        start = time.perf_counter()
        images = np.asarray(self.fn(captions, scale, rng))
        self.calls.append((time.perf_counter() - start, len(images)))
        return images

    def seconds_per_image(self) -> float | None:
        """Mean over the calls after the first (which compiles), or the first alone when it is the only one."""
        calls = self.calls[1:] or self.calls
        images = sum(n for _, n in calls)
        return sum(s for s, _ in calls) / images if images else None


def _seed(rng: Any) -> int:
    import jax

    return int(jax.random.randint(rng, (), 0, 2 ** 31 - 1))


def _one_sample(ev: ConfigDict) -> Any:
    from dalle import sampling_schema

    return sampling_schema.resolve(ConfigDict({"sampling": {"candidates": 1, "keep": 1}}))


def _data_of(directory: str) -> ConfigDict:
    from dalle import model_dir as checkpoint

    config = checkpoint.config_of(directory)
    if "data" not in config:
        raise ValueError(f"{directory!r} has no data section: it does not say which prompts' world it drew")
    return config.data


def autoregressive(entry: ConfigDict, ev: ConfigDict, mesh: ConfigDict) -> TimedGenerator:
    from dalle.eval import main as eval_main

    gen = eval_main.Generator(entry.checkpoint, ev, mesh)
    return TimedGenerator(gen, gen.data, gen.settings)


def clip_guided(entry: ConfigDict, ev: ConfigDict, mesh: ConfigDict) -> TimedGenerator:
    from dalle.clip_guided import ClipGuided

    guide = ClipGuided.from_dirs(entry.vqgan, entry.clip)
    steps = entry.get("steps")

    def fn(captions, scale, rng):
        return guide.images(list(captions), num_images=1, seed=_seed(rng), steps=steps, progress=False)

    return TimedGenerator(fn, _data_of(entry.data_from), _one_sample(ev))


def gan(entry: ConfigDict, ev: ConfigDict, mesh: ConfigDict) -> TimedGenerator:
    from dalle.modeling.gan.api import GANGenerator

    generator = GANGenerator.from_checkpoint(entry.checkpoint)

    def fn(captions, scale, rng):
        return generator.images(list(captions), num_images=1, seed=_seed(rng))

    return TimedGenerator(fn, _data_of(entry.checkpoint), _one_sample(ev))


# The one place a method is named: method -> (builder, keys its entry must set).
METHODS: dict[str, tuple[Callable[[ConfigDict, ConfigDict, ConfigDict], TimedGenerator], tuple[str, ...]]] = {
    "autoregressive": (autoregressive, ("checkpoint",)),
    "clip-guided": (clip_guided, ("vqgan", "clip", "data_from")),
    "gan": (gan, ("checkpoint",)),
}


def check_methods(methods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Errors naming the entry and key: unknown method, missing keys, repeated names."""
    errors, names = [], set()
    for i, m in enumerate(methods):
        label = f"compare.methods[{i}]"
        if m.get("method") not in METHODS:
            errors.append(f"{label}.method = {m.get('method')!r} is not one of {', '.join(METHODS)}")
            continue
        for key in METHODS[m["method"]][1]:
            if not m.get(key):
                errors.append(f"{label} ({m['method']}) needs {key}")
        if not m.get("name"):
            errors.append(f"{label} needs a name (the table's row label)")
        elif m["name"] in names:
            errors.append(f"{label}.name = {m['name']!r} is used twice")
        names.add(m.get("name"))
    return errors


def _entry_summary(entry: ConfigDict, results: dict, timed: TimedGenerator, ev: ConfigDict) -> dict[str, Any]:
    from dalle.train import reporting

    scale_key, scale_entry = next(iter(results["scales"].items()))
    splits = {}
    for split, e in scale_entry["splits"].items():
        comp = e.get("compositional") or {}
        splits[split] = {"all": comp.get("all"), "stderr": comp.get("stderr"), "images": comp.get("images")}
    clip_score = scale_entry.get("clip_score") or {}
    guiding = entry.get("clip", "")
    self_scored = bool(guiding) and os.path.realpath(guiding) == os.path.realpath(ev.clip_checkpoint or "")
    workdir = entry.get("workdir", "")
    summary = reporting.run_summary(workdir) if workdir else {"minutes": None, "steps": None}
    fid = scale_entry.get("fid") or {}
    return {"name": entry.name, "method": entry.method, "guidance": float(scale_key), "splits": splits,
            "clip_score": clip_score.get("clip_score"), "clip_self_scored": self_scored,
            "fid": fid.get("value"), "fid_metric": fid.get("metric"),
            "seconds_per_image": timed.seconds_per_image(), "training_minutes": summary.get("minutes"),
            "training_steps": summary.get("steps")}


def run(config: ConfigDict) -> dict[str, Any]:
    """Measures every method of `config.compare.methods`; writes and returns compare.json's content."""
    from dalle.eval import main as eval_main

    cmp = config.compare
    errors = check_methods([m.to_dict() if isinstance(m, ConfigDict) else dict(m) for m in cmp.methods])
    if errors:
        raise ValueError("\n".join(errors))
    out_dir = cmp.output_dir
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for m in cmp.methods:
        entry = ConfigDict(m.to_dict() if isinstance(m, ConfigDict) else dict(m))
        builder = METHODS[entry.method][0]
        timed = builder(entry, config.eval, config.mesh)
        run_config = ConfigDict(config.to_dict())
        ev = run_config.eval
        ev.output_dir = os.path.join(out_dir, entry.name.replace(" ", "_").replace("/", "_"))
        ev.write_sampling = False
        ev.num_candidates, ev.keep_top = 1, 1
        scale = entry.get("scale")
        if scale is None:
            scale = getattr(timed.settings, "guidance", 1.0) if entry.method == "autoregressive" else 1.0
        ev.condition_scales = (float(scale),)
        print(f"compare: {entry.name} ({entry.method})", file=sys.stderr)
        results = eval_main.run(run_config, entry.get("checkpoint", "") or ev.output_dir, generator=timed)
        rows.append(_entry_summary(entry, results, timed, config.eval))
    report = {"methods": rows, "prompts": {"splits": list(config.eval.splits), "per_split": config.eval.num_prompts},
              "clip_checkpoint": config.eval.clip_checkpoint}
    with open(os.path.join(out_dir, "compare.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def main(argv: Sequence[str]) -> int:
    overrides, rest = config_lib.split_config_args(list(argv))
    parser = Parser(prog="dalle eval compare", description=__doc__.split("\n\n")[0], takes_config=True,
                    examples="dalle eval compare --config eval/compare_shapes:root=outputs/demo")
    parser.add_argument("--config", required=True, help="a comparison config (eval/compare_shapes) or path")
    args = parser.parse_args(rest)
    try:
        config = config_lib.load_config(args.config, overrides)
        if "compare" not in config or "eval" not in config:
            raise ValueError(f"{args.config} has no compare and eval sections")
        report = run(config)
    except (config_lib.ConfigError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"dalle eval compare: error: {e}", file=sys.stderr)
        return 2
    for row in report["methods"]:
        accs = ", ".join(f"{s} {v['all']:.3f}" for s, v in row["splits"].items() if v["all"] is not None)
        spi = row["seconds_per_image"]
        print(f"{row['name']}: {accs}; CLIP score {row['clip_score']}; {row['fid_metric']} {row['fid']}; "
              f"{spi:.3f} s/image" if spi is not None else f"{row['name']}: {accs}")
    return 0
