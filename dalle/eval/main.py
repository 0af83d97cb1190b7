"""`dalle eval`: generate for a prompt file or the shapes splits, sweep guidance, rerank with CLIP, and measure.

    dalle eval --config configs/eval/shapes.py --checkpoint outputs/demo/dalle [--config.eval.num_prompts=32]
    dalle eval reference --config configs/eval/shapes.py --checkpoint outputs/demo/dalle --out ref_stats.npz
    dalle eval reference --config configs/eval/shapes.py --images DIR --out ref_stats.npz   # a folder of images
    dalle eval compare --config eval/compare_shapes:root=outputs/demo   # methods side by side (eval/compare.py)

For each `eval.condition_scales` value s: N = `eval.num_candidates` images per prompt (sharded over the mesh's
batch axes), reranked by CLIP to the best k = `eval.keep_top` (sampling settings the eval config leaves None
are the model's `sampling` section), then
  * compositional accuracy per split and attribute (shapes prompts; the analyzer reads the images back),
  * CLIP score (mean max(100 cos, 0)), named with its backbone,
  * FID and KID against reference statistics (`eval.fid_reference`, or renders of the same prompts) with the FID
    Inception, or - when its weights are absent - the configured fallback, named "FID-CLIP" in every output.
Writes <output_dir>/metrics.json, grids/<scale>_<split>.png, images/ (PNG), and fid_vs_clip.svg. A metric that
cannot be computed is reported as null with the reason, never as a made-up number. After a sweep of two or more
scales the best one (`best_scale`) goes into the exported model's `sampling` section (`eval.write_sampling`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import paths, registry
from dalle.cli.args import Parser

if TYPE_CHECKING:
    from dalle.eval.metrics import EvalContext


@dataclasses.dataclass
class Prompt:
    split: str
    caption: str
    request: Any = None  # dalle.data.shapes.Request for shapes prompts
    scene: Any = None
    reference: np.ndarray | None = None  # the real image the caption describes (dataset prompts)
    fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # the example's other features (emoji, ...)
    index: int = 0  # position in its split (seeds per-prompt draws such as R-precision distractors)


def read_prompts_file(path: str, limit: int) -> list[Prompt]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"eval.prompts_file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"eval.prompts_file {path!r} has no prompts")
    return [Prompt("prompts", line) for line in lines[:limit]]


def dataset_prompts(data: ConfigDict, split: str, count: int) -> list[Prompt]:
    """The first `count` images of a built dataset's split (their first caption when there are several per image),
    with the real image and the example's other features."""
    from dalle.data import build

    builder = build.load_builder(data)
    if split not in builder.info.splits:
        raise ValueError(f"eval.splits: dataset {builder.name!r} has no split {split!r} "
                         f"(splits: {', '.join(builder.info.splits)})")
    out: list[Prompt] = []
    for ex in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator():
        if int(ex.get("caption_index", 0)) != 0:
            continue
        fields = {k: (v.decode("utf-8") if isinstance(v, bytes) else v) for k, v in ex.items()
                  if k not in ("image", "caption")}
        out.append(Prompt(split, ex["caption"].decode("utf-8"), reference=ex["image"], fields=fields,
                          index=len(out)))
        if len(out) >= count:
            break
    return out


def make_prompts(ev: ConfigDict, data: ConfigDict | None) -> list[Prompt]:
    """The prompt file's lines; else the first eval.num_prompts of each split: shapes scenes, or the images of
    the checkpoint's built dataset (any other tfds source)."""
    if ev.prompts_file:
        return read_prompts_file(ev.prompts_file, ev.num_prompts)
    from dalle.data import sources

    if data is None or not sources.of(data).is_tfds:
        raise ValueError("eval.prompts_file is empty and the checkpoint's data section names no dataset to take "
                         "prompts from: give eval.prompts_file")
    out = []
    if data.get("source") == "shapes":
        from dalle.eval import compositional

        if ev.get("relation_prob") is not None:
            data = ConfigDict(data.to_dict())
            data.relation_prob = float(ev.relation_prob)
        for split in ev.splits:
            out += [Prompt(p.split, p.caption, p.request, p.scene, index=i)
                    for i, p in enumerate(compositional.shapes_prompts(data, split, ev.num_prompts))]
        return out
    for split in ev.splits:
        out += dataset_prompts(data, split, ev.num_prompts)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
class Generator:
    """The DALL·E model + its tokenizer + VQGAN (dalle.generation, so prompts and the unconditional branch are
    tokenized exactly as in training), sharded over the eval mesh: prompts -> uint8 [P * N, H, W, 3]."""

    def __init__(self, checkpoint_dir: str, ev: ConfigDict, mesh_config: ConfigDict):
        from dalle import generation, sharding

        self.gen = generation.Generator.from_checkpoint(
            checkpoint_dir, mesh=sharding.mesh_from_config(mesh_config), tokenizer_path=ev.tokenizer_path,
            vqgan_checkpoint=ev.vqgan_checkpoint, dtype=ev.get("dtype", "float32"))
        self.config, self.data, self.model, self.ev = self.gen.config, self.gen.config.data, self.gen.model, ev
        self.settings = sampling_settings(ev, self.config)

    def roundtrip(self, images: np.ndarray) -> np.ndarray:
        """VQGAN encode + decode: what the best possible token sequence would look like after decoding (uint8, as
        generated images are)."""
        from dalle.modeling.clip.model import to_uint8

        vq = self.gen.vqgan
        return np.concatenate([to_uint8(np.clip(vq.decode(vq.encode(images[i:i + 64])), 0, 1))
                               for i in range(0, len(images), 64)])

    def fidelity(self, images: np.ndarray) -> dict[str, Any]:
        """PSNR of the VQGAN round trip of real uint8 images (decoded floats in [0, 1], not rounded), and the
        share of its codebook they use."""
        vq = self.gen.vqgan
        codes = np.concatenate([vq.encode(images[i:i + 64]) for i in range(0, len(images), 64)])
        recon = np.concatenate([np.clip(vq.decode(codes[i:i + 64]), 0, 1) for i in range(0, len(codes), 64)])
        err = (images.astype(np.float64) / 255.0 - recon.astype(np.float64)) ** 2
        mse = np.maximum(err.reshape(len(images), -1).mean(1), 1e-10)
        psnr = 10 * np.log10(1.0 / mse)
        return {"psnr": float(psnr.mean()), "psnr_stderr": float(psnr.std() / np.sqrt(len(psnr))),
                "codes_used": int(np.unique(codes).size), "codebook_size": int(vq.codebook_size),
                "codebook_usage": float(np.unique(codes).size / vq.codebook_size), "images": int(len(images))}

    def __call__(self, captions: Sequence[str], scale: float, rng: Any) -> np.ndarray:
        s = self.settings
        return self.gen.images(list(captions), num_images=s.candidates, seed=rng, condition_scale=float(scale),
                               top_k=s.top_k, top_p=s.top_p, temperature=s.temperature)


# The eval keys that override the model's sampling section (None = the model's value).
EVAL_SAMPLING_KEYS = {"candidates": "num_candidates", "keep": "keep_top", "temperature": "temperature",
                      "top_k": "top_k", "top_p": "top_p", "clip_checkpoint": "clip_checkpoint"}


def sampling_settings(ev: ConfigDict, model_config: Any) -> Any:
    """What the sweep samples with besides the scale (`dalle.sampling_schema.Sampling`): the model's `sampling`
    section, overridden by the eval keys that are set. The job always ranks with eval.clip_checkpoint, the CLIP it
    scores with ("" = no reranking)."""
    from dalle import sampling_schema

    return sampling_schema.resolve(model_config, {k: ev[e] for k, e in EVAL_SAMPLING_KEYS.items()},
                                   {k: f"eval.{e}" for k, e in EVAL_SAMPLING_KEYS.items()})


def load_feature_network(ev: ConfigDict, clip: Any, notes: list[str]):
    """The FID Inception when its weights are there; else the fallback (named), else None with a note."""
    from dalle.eval import fid, inception

    try:
        return fid.FeatureNetwork.inception(inception.load_inception(ev.inception_checkpoint))
    except FileNotFoundError as e:
        msg = f"FID Inception weights not available ({e})"
    if ev.fid_fallback == "clip":
        if clip is None:
            notes.append(f"{msg}; the fallback 'clip' needs eval.clip_checkpoint, which is not set: FID/KID not "
                         "computed")
            return None
        notes.append(f"{msg}; using the CLIP image tower ({clip.backbone}) instead: reported as FID-CLIP/KID-CLIP, "
                     "not comparable with published FIDs")
        return fid.FeatureNetwork.clip(clip.model, clip.params, clip.backbone)
    notes.append(f"{msg}; eval.fid_fallback = 'none': FID/KID not computed")
    return None


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
def image_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 [rows, cols, H, W, 3] -> one uint8 image with `pad` gray pixels between cells."""
    r, c, h, w, _ = images.shape
    out = np.full((r * (h + pad) + pad, c * (w + pad) + pad, 3), 128, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = images[i, j]
    return out


def save_png(path: str, image: np.ndarray) -> None:
    from dalle import generation  # imports jax: not at module level (`dalle eval --help` stays fast)

    generation.save_png(path, image)


def fid_clip_svg(points: list[tuple[float, float | None, float | None]], fid_name: str, clip_name: str) -> str:
    """An SVG line plot of FID (y) against CLIP score (x), one labeled point per guidance scale (no matplotlib in
    the venv: a small hand-written SVG). Points lacking either number are listed as missing, not drawn."""
    ok = [(s, c, f) for s, c, f in points if c is not None and f is not None]
    w, h, m = 480, 360, 60
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
            f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>')
    title = f'<text x="{w / 2}" y="20" text-anchor="middle">{fid_name} vs CLIP score across condition_scale</text>'
    if not ok:
        why = "no scale has both numbers (see metrics.json notes)"
        return head + title + f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle">{why}</text></svg>\n'
    xs, ys = [c for _, c, _ in ok], [f for _, _, f in ok]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x0, x1 = (x0 - 1, x1 + 1) if x1 - x0 < 1e-9 else (x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    y0, y1 = (y0 - 1, y1 + 1) if y1 - y0 < 1e-9 else (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))
    px = lambda v: m + (v - x0) / (x1 - x0) * (w - 2 * m)  # noqa: E731
    py = lambda v: h - m - (v - y0) / (y1 - y0) * (h - 2 * m)  # noqa: E731
    parts = [head, title,
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle">CLIP score ({clip_name})</text>',
             f'<text x="15" y="{h / 2}" text-anchor="middle" transform="rotate(-90 15 {h / 2})">{fid_name}</text>']
    for v in (x0, x1):
        parts.append(f'<text x="{px(v):.1f}" y="{h - m + 15}" text-anchor="middle">{v:.2f}</text>')
    for v in (y0, y1):
        parts.append(f'<text x="{m - 5}" y="{py(v):.1f}" text-anchor="end">{v:.3g}</text>')
    order = sorted(ok)
    path = " ".join(f"{px(c):.1f},{py(f):.1f}" for _, c, f in order)
    parts.append(f'<polyline points="{path}" fill="none" stroke="steelblue" stroke-width="2"/>')
    for s, c, f in order:
        parts.append(f'<circle cx="{px(c):.1f}" cy="{py(f):.1f}" r="4" fill="steelblue"/>')
        parts.append(f'<text x="{px(c) + 6:.1f}" y="{py(f) - 6:.1f}">s={s:g}</text>')
    missing = [s for s, c, f in points if c is None or f is None]
    if missing:
        parts.append(f'<text x="{m}" y="{m - 10}">not plotted (a number missing): s = {missing}</text>')
    parts.append("</svg>\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------------
def default_output_dir(checkpoint_dir: str) -> str:
    """CHECKPOINT/eval; for one checkpoint step of a workdir (WORKDIR/checkpoints/STEP), WORKDIR/eval_step_STEP,
    so that orbax's step folders hold only what orbax wrote."""
    from dalle import model_dir

    step_of = model_dir.checkpoint_step(checkpoint_dir)
    if step_of is not None:
        return paths.join(step_of[0], f"eval_step_{step_of[1]}")
    return paths.join(checkpoint_dir, "eval")


def run(config: ConfigDict, checkpoint_dir: str, generator: Any = None) -> dict[str, Any]:
    """Runs the whole evaluation and returns what it wrote to metrics.json. `generator` (tests) replaces the
    DALL·E + VQGAN stack: any callable (captions, scale, rng) -> uint8 [P * N, H, W, 3]."""
    import jax

    from dalle.modeling.clip import model as clip_lib
    from dalle.eval import compositional, fid, rerank
    from dalle.eval import metrics as metrics_lib

    ev = config.eval
    out_dir = ev.output_dir or default_output_dir(checkpoint_dir)
    paths.makedirs(out_dir)
    notes: list[str] = []
    t_start = time.time()
    gen = generator or Generator(checkpoint_dir, ev, config.mesh)
    settings = getattr(gen, "settings", None) or sampling_settings(ev, getattr(gen, "config", None))
    n_cand, keep = settings.candidates, settings.kept
    data = getattr(gen, "data", None)
    prompts = make_prompts(ev, data)
    splits = list(dict.fromkeys(p.split for p in prompts))

    clip = None
    if ev.clip_checkpoint:
        clip = clip_lib.load_clip(ev.clip_checkpoint, data.get("tokenizer_path", "") if data is not None else "",
                               data.get("unknown_words", "keep") if data is not None else None)
    else:
        notes.append("eval.clip_checkpoint is empty: no reranking (the first keep_top candidates are kept) and no "
                     "CLIP score")
    if clip is None and keep < n_cand:
        notes.append(f"keep_top {keep} < num_candidates {n_cand} without CLIP: first candidates kept")
    want_features = any("features" in metrics_lib.get(name).needs for name in ev.metrics)
    net = load_feature_network(ev, clip, notes) if want_features else None

    reference = None
    if net is not None:
        if ev.fid_reference:
            reference = fid.Statistics.load(ev.fid_reference)
            if reference.network != net.name:
                raise ValueError(f"eval.fid_reference {ev.fid_reference!r} was made with {reference.network!r}, but "
                                 f"this run's feature network is {net.name!r}")
        elif all(p.scene is not None for p in prompts) and data is not None:
            ref_images = compositional.render_prompts(data, [p for p in prompts])
            reference = fid.compute_statistics(net.features(ref_images), net.name, net.preprocessing,
                                               f"renders of the {len(prompts)} eval prompts")
        elif all(p.reference is not None for p in prompts):
            reference = fid.compute_statistics(net.features(np.stack([p.reference for p in prompts])), net.name,
                                               net.preprocessing, f"the {len(prompts)} eval prompts' real images")
        else:
            notes.append("no eval.fid_reference and the prompts have no scenes to render: FID/KID not computed")

    results: dict[str, Any] = {"scales": {}}
    ceiling = tokenizer_ceiling(ev, gen, prompts, splits, data)
    if ceiling is not None:
        results["tokenizer_ceiling"] = ceiling
    if hasattr(gen, "fidelity") and prompts and all(p.reference is not None for p in prompts):
        results["tokenizer_fidelity"] = {split: gen.fidelity(np.stack([p.reference for p in prompts
                                                                      if p.split == split])) for split in splits}
    shared: dict[str, Any] = {}  # work the metrics share across scales (caption pools, fitted classifiers)
    for metric_name in dict.fromkeys(ev.metrics):
        ceilings = metrics_lib.get(metric_name).ceiling
        if ceilings is not None:
            results.setdefault("ceilings", {})[metric_name] = registry.resolve(ceilings)(
                metrics_lib.EvalContext(settings=ev, prompts=prompts, splits=splits, images=np.zeros((0,)),
                                        scale=float("nan"), data=data, clip=clip, notes=notes, out_dir=out_dir,
                                        shared=shared, roundtrip=getattr(gen, "roundtrip", None)))
    plot_points = []
    rng = jax.random.PRNGKey(ev.seed)
    total = len(ev.condition_scales) * math.ceil(len(prompts) / ev.batch_size)
    bar = None
    if ev.progress_bar and jax.process_index() == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="eval", unit="batch", file=sys.stderr, dynamic_ncols=True)
    for s_i, scale in enumerate(ev.condition_scales):
        kept_all, scores_all, first_all = [], [], []
        for b_i, start in enumerate(range(0, len(prompts), ev.batch_size)):
            batch = prompts[start:start + ev.batch_size]
            caps = [p.caption for p in batch]
            images = gen(caps, scale, jax.random.fold_in(jax.random.fold_in(rng, s_i), b_i))
            if len(images) != len(batch) * n_cand:
                raise RuntimeError(f"generator returned {len(images)} images for {len(batch)} prompts x "
                                   f"{n_cand} candidates")
            if clip is not None:
                kept, scores, _ = rerank.rerank_images(clip, images, caps, keep)
            else:
                kept = images.reshape(len(batch), n_cand, *images.shape[1:])[:, :keep]
                scores = np.full((len(batch), keep), np.nan)
            kept_all.append(kept)
            scores_all.append(scores)
            first_all.append(images.reshape(len(batch), n_cand, *images.shape[1:])[:, :1])
            if bar is not None:
                bar.update(1)
        kept = np.concatenate(kept_all)  # [P, k, H, W, 3]
        entry = _measure(metrics_lib.EvalContext(
            settings=ev, prompts=prompts, splits=splits, images=kept, scale=float(scale), data=data, clip=clip,
            features=net, reference=reference, notes=notes, out_dir=out_dir, shared=shared,
            first_candidates=np.concatenate(first_all)))
        results["scales"][f"{scale:g}"] = entry
        plot_points.append((float(scale), entry["clip_score"].get("clip_score"), entry["fid"].get("value")))
    if bar is not None:
        bar.close()
    if ev.completion:
        results["completion"] = measure_completion(ev, gen, data, prompts, results, out_dir)

    fid_name = net.metric_prefix if net is not None else "FID"
    svg = fid_clip_svg(plot_points, fid_name, clip.backbone if clip else "no CLIP")
    paths.write_text_atomic(paths.join(out_dir, "fid_vs_clip.svg"), svg)
    from dalle import model_dir

    trained_steps = model_dir.trained_step(checkpoint_dir)
    results.update({
        "checkpoint": paths.absolute(checkpoint_dir),
        "checkpoint_step": trained_steps,  # the training step the evaluated weights come from (None: not recorded)
        "prompts": {"source": ev.prompts_file or f"{data.get('source', '?') if data is not None else '?'} splits",
                    "splits": splits, "per_split": ev.num_prompts,
                    "total": len(prompts)},
        "sampling": {"num_candidates": n_cand, "keep_top": keep, "top_k": settings.top_k,
                     "top_p": settings.top_p, "temperature": settings.temperature, "seed": ev.seed,
                     "reranked_by": clip.backbone if clip and keep < n_cand else None,
                     # the model's sampling section as measured here, but for the swept guidance
                     "settings": {k: v for k, v in settings.to_dict().items() if k != "guidance"}},
        "clip_backbone": clip.backbone if clip else None,
        "fid_network": None if net is None else {"name": net.name, "metric": net.metric_prefix,
                                                  "preprocessing": net.preprocessing,
                                                  "reference": None if reference is None else reference.source
                                                  or ev.fid_reference, "reference_count":
                                                  None if reference is None else reference.count},
        "notes": notes,
        "seconds": round(time.time() - t_start, 1),
        "config": json.loads(config.to_json_best_effort()),
    })
    if not ev.write_sampling:
        results["sampling_written"] = {"written": False, "why": "eval.write_sampling is false"}
    elif len(ev.condition_scales) < 2:
        results["sampling_written"] = {"written": False, "why": "one guidance scale measured: nothing to choose"}
    elif jax.process_index() == 0:
        results["sampling_written"] = write_best_sampling(results, checkpoint_dir)
    paths.write_text_atomic(paths.join(out_dir, "metrics.json"),
                            json.dumps(results, indent=2, sort_keys=True, default=_json_default))
    if jax.process_index() == 0:  # the same numbers and grids in TensorBoard, at the model's training step
        from dalle.eval import tensorboard

        from dalle.train import reporting

        step = trained_steps if trained_steps is not None else reporting.run_summary(checkpoint_dir)["steps"]
        tensorboard.write(out_dir, json.loads(json.dumps(results, default=_json_default)), step or 0)
    return results


# ----------------------------------------------------------------------------------------------------------------
# The best measured settings, written into the model
# ----------------------------------------------------------------------------------------------------------------
def headline(entry: dict[str, Any]) -> tuple[str, float] | None:
    """A scale's headline number, higher is better: the validation split's fully-correct fraction (EVAL.md's
    headline), else the mean fully-correct fraction of the splits that have one, else the validation split's
    R-precision (R@1), else the CLIP score of all prompts; None when the scale has none of them."""
    def number(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    splits = entry.get("splits") or {}
    acc = {name: number((e.get("compositional") or {}).get("all")) for name, e in splits.items()}
    if acc.get("validation") is not None:
        return "validation fully correct", acc["validation"]
    known = [v for v in acc.values() if v is not None]
    if known:
        return "fully correct (mean of the splits)", sum(known) / len(known)
    r1 = number((splits.get("validation", {}).get("r_precision") or {}).get("r1"))
    if r1 is not None:
        return "validation R@1", r1
    clip = number((entry.get("clip_score") or {}).get("clip_score"))
    return ("CLIP score", clip) if clip is not None else None


def best_scale(results: dict[str, Any]) -> tuple[float, str, float] | None:
    """(guidance, headline name, value) of the scale with the best headline among the scales measured with the
    first scale's kind of headline; ties go to the scale measured first. None when no scale has a number."""
    measured = [(float(scale), h) for scale, entry in results.get("scales", {}).items()
                if (h := headline(entry)) is not None]
    if not measured:
        return None
    kind = measured[0][1][0]
    scale, (_, value) = max((m for m in measured if m[1][0] == kind), key=lambda m: m[1][1])  # max keeps the first
    return scale, kind, value


def _measured_settings(results: dict[str, Any]) -> dict[str, Any]:
    """The sampling settings (but guidance) a metrics.json was measured with; older files list them loosely."""
    s = results["sampling"]
    if "settings" in s:
        return dict(s["settings"])
    clip = (results.get("config", {}).get("eval") or {}).get("clip_checkpoint", "")
    return {"candidates": s["num_candidates"], "keep": s["keep_top"], "temperature": s["temperature"],
            "top_k": s["top_k"], "top_p": s["top_p"], "clip_checkpoint": clip if s.get("reranked_by") else ""}


def write_best_sampling(results: dict[str, Any], checkpoint_dir: str) -> dict[str, Any]:
    """Writes the best measured settings (the best scale of the sweep, the rest as sampled) into the `sampling`
    section of `checkpoint_dir`'s exported model, atomically, with a `sampling_measured` record next to the
    config; `dalle generate`/`serve` then sample that way by default. Returns what was written, or why not."""
    from dalle import model_dir, sampling_schema

    best = best_scale(results)
    if best is None:
        return {"written": False, "why": "no scale has a headline number (compositional accuracy or CLIP score)"}
    target = model_dir.exported_model_dir(checkpoint_dir)
    if target is None:
        return {"written": False, "why": f"{checkpoint_dir!r} holds no exported model (training has not finished)"}
    scale, metric, value = best
    section = sampling_schema.resolve(model_dir.read_config(target),
                                      {**_measured_settings(results), "guidance": scale}).to_dict()
    record = {"by": "dalle eval", "headline": metric, "value": value, "guidance": scale,
              "by_scale": {k: (headline(e) or (None, None))[1] for k, e in results["scales"].items()}}
    model_dir.set_config_section(target, sampling_schema.SECTION, section, extra={"sampling_measured": record})
    return {"written": True, "model": target, "sampling": section, **record}


def measure_completion(ev: ConfigDict, gen: Any, data: ConfigDict | None, prompts: Sequence[Prompt],
                       results: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """eval.completion (dalle/eval/completion.py) at the best scale measured, with grids of reference /
    completion / the same caption without the image prompt; a null with the reason where it cannot run."""
    from dalle.eval import completion

    if not hasattr(gen, "gen") or data is None or not any(p.scene is not None for p in prompts):
        return {"value": None, "why": "image completion needs a DALL·E checkpoint and shapes-world prompts"}
    best = best_scale(results)
    scale = best[0] if best is not None else float(ev.condition_scales[0])
    s = gen.settings
    out = completion.measure(gen.gen, data, prompts, scale=scale, keep_rows=ev.completion_rows, seed=ev.seed,
                             batch_size=ev.batch_size,
                             sampler={"top_k": s.top_k, "top_p": s.top_p, "temperature": s.temperature})
    images = out.pop("_images", None)
    if images is not None:
        for split in out["splits"]:
            idx = [i for i, sp in enumerate(images["splits"]) if sp == split][: ev.grid_prompts]
            trio = np.stack([images["reference"][idx], images["completed"][idx], images["plain"][idx]], axis=1)
            save_png(paths.join(out_dir, "grids", f"completion_{split}.png"), image_grid(trio))
    return out


def tokenizer_ceiling(ev, gen, prompts, splits, data) -> dict[str, Any] | None:
    """Compositional accuracy of the prompts' own scenes after the image tokenizer's round trip, per split: what
    decoding through this VQGAN alone costs on these scenes (None without scenes or a tokenizer). Not a strict
    bound on generated images, which may draw easier scenes than the references for the same prompt."""
    from dalle.eval import compositional

    if ("compositional" not in ev.metrics or data is None or not hasattr(gen, "roundtrip")
            or not all(p.scene is not None and p.request is not None for p in prompts)):
        return None
    out = {}
    for split in splits:
        sub = [p for p in prompts if p.split == split]
        out[split] = compositional.accuracy(gen.roundtrip(compositional.render_prompts(data, sub)),
                                            [p.request for p in sub], data,
                                            [compositional.prompt_kinds(p.request, p.scene) for p in sub])
    return out


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _measure(ctx: EvalContext) -> dict[str, Any]:
    """One scale's entry of metrics.json: each metric of eval.metrics (dalle.registry.METRICS) per split and over
    all prompts, the `not_asked` entries of the others, and the grids/images of the kept candidates."""
    from dalle.eval import metrics as metrics_lib

    ev, prompts, kept = ctx.settings, ctx.prompts, ctx.images
    asked = [metrics_lib.get(name) for name in dict.fromkeys(ev.metrics)]
    k = kept.shape[1]
    entry: dict[str, Any] = {"splits": {}}
    tag = f"s{ctx.scale:g}"
    for split in ctx.splits:
        idx = [i for i, p in enumerate(prompts) if p.split == split]
        sub = kept[idx]
        split_entry: dict[str, Any] = {"prompts": len(idx)}
        for metric in asked:
            if metric.per_split:
                split_entry[metric.name] = metric(ctx, sub, [prompts[i] for i in idx])
        entry["splits"][split] = split_entry
        g = min(len(idx), ev.grid_prompts)
        if g:
            save_png(paths.join(ctx.out_dir, "grids", f"{tag}_{split}.png"), image_grid(sub[:g]))
        if ev.save_images:
            for j, i in enumerate(idx):
                for c in range(k):
                    save_png(paths.join(ctx.out_dir, "images", tag, split, f"{j:05d}_{c}.png"), sub[j, c])
    for metric in asked:
        if metric.overall:
            entry[metric.name] = metric(ctx, kept, prompts)
    for name in metrics_lib.names():  # keys that readers expect even when not asked (null, with the reason)
        metric = metrics_lib.get(name)
        if name not in entry and metric.not_asked is not None:
            entry[name] = metric.not_asked(ctx)
    return entry


# ----------------------------------------------------------------------------------------------------------------
# Reference statistics
# ----------------------------------------------------------------------------------------------------------------
def read_image_folder(directory: str) -> np.ndarray:
    from PIL import Image

    names = sorted(n for n in os.listdir(directory) if n.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
    if not names:
        raise FileNotFoundError(f"--images {directory!r} holds no .png/.jpg/.webp files")
    ims = [np.asarray(Image.open(os.path.join(directory, n)).convert("RGB")) for n in names]
    sizes = {im.shape for im in ims}
    if len(sizes) > 1:
        from dalle.modeling.clip.model import resize_center_crop

        side = min(min(s[:2]) for s in sizes)
        ims = [resize_center_crop(im, side) for im in ims]
    return np.stack(ims)


def make_reference(config: ConfigDict, out: str, checkpoint_dir: str = "", images_dir: str = "") -> dict[str, Any]:
    """Writes reference statistics (mu, sigma, features) of a folder of images or of the renders of the eval
    prompts (shapes world of the checkpoint's data config) with the configured feature network."""
    from dalle import model_dir as checkpoint
    from dalle.modeling.clip import model as clip_lib
    from dalle.eval import compositional, fid

    ev = config.eval
    notes: list[str] = []
    data = checkpoint.read_config(checkpoint_dir).data if checkpoint_dir else None
    clip = (clip_lib.load_clip(ev.clip_checkpoint, data.get("tokenizer_path", "") if data is not None else "",
                               data.get("unknown_words", "keep") if data is not None else None)
            if ev.clip_checkpoint else None)
    net = load_feature_network(ev, clip, notes)
    if net is None:
        raise RuntimeError("; ".join(notes))
    if images_dir:
        images, source = read_image_folder(images_dir), f"folder {os.path.abspath(images_dir)}"
    else:
        if data is None:
            raise ValueError("give --checkpoint (its data config names the shapes world) or --images DIR")
        prompts = make_prompts(ev, data)
        images, source = compositional.render_prompts(data, prompts), f"renders of {len(prompts)} eval prompts"
    stats = fid.compute_statistics(net.features(images), net.name, net.preprocessing, source)
    stats.save(out)
    return {"out": out, "count": stats.count, "network": net.name, "notes": notes}


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    sub = argv.pop(0) if argv and argv[0] == "reference" else "eval"
    overrides, rest = config_lib.split_config_args(argv)
    parser = Parser(prog=f"dalle eval{' reference' if sub == 'reference' else ''}", description=__doc__,
                    takes_config=True, examples="dalle eval --config eval/shapes --checkpoint outputs/demo/dalle\n"
                                                "dalle eval --config eval/emoji --checkpoint outputs/emoji/dalle")
    parser.add_argument("--config", required=True, help="an eval config's name (eval/shapes) or path[:variant]")
    parser.add_argument("--checkpoint", default="", help="DALL·E model dir, trainer workdir, or one checkpoint step "
                                                             "of it (WORKDIR/checkpoints/STEP)")
    if sub == "reference":
        parser.add_argument("--out", required=True, help="statistics .npz to write")
        parser.add_argument("--images", default="", help="a folder of images instead of the shapes renders")
    args = parser.parse_args(rest)
    try:
        config = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "eval" not in config:
        print(f"error: {args.config} has no eval section", file=sys.stderr)
        return 2
    try:
        if sub == "reference":
            info = make_reference(config, args.out, args.checkpoint, args.images)
            print(json.dumps(info, indent=2))
            return 0
        if not args.checkpoint:
            print("error: --checkpoint DIR is required", file=sys.stderr)
            return 2
        results = run(config, args.checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for scale, entry in results["scales"].items():
        parts = [f"condition_scale {scale}:"]
        for key, label, field in (("compositional", "accuracy", "all"), ("r_precision", "R@1", "r1")):
            values = {s: (e.get(key) or {}).get(field) for s, e in entry["splits"].items() if key in e}
            if values:
                parts.append(f"{label} {values}")
        parts.append(f"CLIP score {entry['clip_score'].get('clip_score')}")
        parts.append(f"{(results['fid_network'] or {}).get('metric', 'FID')} {entry['fid'].get('value')}")
        print("  ".join(parts))
    for note in results["notes"]:
        print(f"note: {note}")
    written = results.get("sampling_written") or {}
    if written.get("written"):
        print(f"best guidance {written['guidance']:g} ({written['headline']} {written['value']:.3g}): written to "
              f"the sampling section of {written['model']}")
    elif written:
        print(f"sampling section not rewritten: {written['why']}")
    out = config.eval.output_dir or default_output_dir(args.checkpoint)
    print(f"wrote {paths.join(out, 'metrics.json')}")
    return 0
