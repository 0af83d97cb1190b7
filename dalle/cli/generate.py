"""`dalle generate "a red circle above a blue square" [options]`: prompts -> PNG grid + one PNG per image.

    dalle generate "a red circle" --n 16 --top 4 --condition-scale 3 --seed 0 --out grid.png
    dalle generate --prompts-file prompts.txt --checkpoint outputs/demo/dalle --out-dir samples/

Samples `--n` candidates per prompt with super-conditioning, keeps the `--top` best by CLIP when a CLIP
checkpoint is given (`--clip DIR`; otherwise the first `--top` in sampling order), decodes them with the model's
VQGAN and writes the grid (one row per prompt) and each image.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

DEFAULT_CHECKPOINT = "outputs/demo/dalle"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dalle generate", description=__doc__.split("\n\n")[0])
    p.add_argument("prompts", nargs="*", help="one or more prompts (quote each)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"trained workdir or model dir (default: {DEFAULT_CHECKPOINT}, what `make demo` writes)")
    p.add_argument("--n", type=int, default=8, help="candidates sampled per prompt (default 8)")
    p.add_argument("--top", type=int, default=0, help="images kept per prompt (default: all n)")
    p.add_argument("--condition-scale", type=float, default=3.0, help="super-conditioning scale (1 = off)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest codes (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", default="", help="CLIP checkpoint for reranking (dalle convert clip / clip_shapes)")
    p.add_argument("--out", default="grid.png", help="grid PNG path")
    p.add_argument("--out-dir", default="", help="also write each image here as PNG")
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the written PNGs")
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise ValueError(f"--prompts-file {args.prompts_file!r} does not exist")
        with open(args.prompts_file, encoding="utf-8") as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise ValueError("no prompt given: dalle generate \"a red circle\" (or --prompts-file FILE)")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise ValueError(f"prompt {i + 1} is empty")
    return prompts


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        prompts = read_prompts(args)
        if args.n < 1:
            raise ValueError(f"--n = {args.n} must be >= 1")
        if args.top < 0 or args.top > args.n:
            raise ValueError(f"--top = {args.top} must be between 0 (all) and --n = {args.n}")
        if args.scale < 1:
            raise ValueError(f"--scale = {args.scale} must be >= 1")
    except ValueError as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from dalle import generation

    try:
        gen = generation.Generator.from_checkpoint(args.checkpoint)
        scorer = _load_reranker(args.clip) if args.clip else None
    except (generation.GenerationError, FileNotFoundError, ValueError) as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    keep = args.top or args.n
    rows, names = [], []
    import numpy as np

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for i, prompt in enumerate(tqdm(prompts, desc="generate", unit="prompt", file=sys.stderr)):
                images = gen.images([prompt], num_images=args.n, seed=args.seed + i,
                                    condition_scale=args.condition_scale, top_k=args.top_k, top_p=args.top_p,
                                    temperature=args.temperature)
                if scorer is not None:
                    order = scorer(prompt, images)[:keep]
                else:
                    order = list(range(keep))
                rows.append(images[order])
                names.append(prompt)
        except generation.GenerationError as e:
            print(f"dalle generate: error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    grid = generation.make_grid(np.concatenate(rows), cols=keep)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    generation.save_png(args.out, grid, scale=args.scale)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        for i, (prompt, imgs) in enumerate(zip(names, rows)):
            for j, img in enumerate(imgs):
                generation.save_png(os.path.join(args.out_dir, f"{i:03d}_{j:02d}.png"), img, scale=args.scale)
    print(f"wrote {args.out} ({len(prompts)} prompt(s) x {keep} image(s)"
          f"{', reranked by CLIP' if scorer else ''})")
    return 0


def _load_reranker(clip_dir: str):
    """(prompt, images) -> candidate indices best first, by CLIP score (dalle/eval/rerank.py)."""
    from dalle.eval import rerank
    from dalle.modeling.clip import model as clip

    model = clip.load_clip(clip_dir)

    def order(prompt: str, images):
        scores = rerank.candidate_scores(model, images, [prompt])
        return list(rerank.rerank_order(scores, scores.shape[1])[0])

    return order
