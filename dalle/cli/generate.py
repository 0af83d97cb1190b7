"""`dalle generate "a red circle above a blue square" [options]`: prompts -> PNG grid + one PNG per image.

    dalle generate "a red circle" --n 16 --top 4 --condition-scale 3 --seed 0 --out grid.png
    dalle generate --prompts-file prompts.txt --checkpoint outputs/demo/dalle --out-dir samples/
    dalle generate "a red circle below a blue square" --image-prompt photo.png --keep-rows 2
    dalle generate "a red circle" --method clip-guided --steps 100 --n 4

Samples `--n` candidates per prompt with super-conditioning, keeps the `--top` best by CLIP when a CLIP
checkpoint is given (`--clip DIR`; otherwise the first `--top` in sampling order), decodes them with the model's
VQGAN and writes the grid (one row per prompt) and each image. With `--image-prompt FILE --keep-rows K` the top K
rows of image codes come from the picture and the rest are drawn to match the prompt (DALL·E's image completion).
`--method clip-guided` needs no text-to-image model: it optimises the VQGAN's latents until its decoding matches
the prompt under CLIP (dalle/clip_guided.py; the VQGAN and CLIP default to those of --checkpoint's model, or give
--vqgan and --clip), the images ordered by that similarity. Every sampling flag left out takes the model's
`sampling` section (saved with the model; `dalle eval` writes the guidance it measured best), so a bare
`dalle generate "a red circle"` samples the demo model as EVAL.md reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from dalle import precision
from dalle.cli.args import Parser

DEFAULT_CHECKPOINT = "outputs/demo/dalle"


def _parser() -> Parser:
    p = Parser(prog="dalle generate", description=__doc__.split("\n\n")[0],
               examples='dalle generate "a red circle" --n 8 --top 2 --seed 0 --out grid.png\n'
                        'dalle generate --prompts-file prompts.txt --checkpoint weights/dalle_mini --dtype bfloat16')
    p.add_argument("prompts", nargs="*", help="one or more prompts (quote each)")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"trained workdir or model dir (default: {DEFAULT_CHECKPOINT}, what `make demo` writes)")
    # Sampling flags default to None: the model's `sampling` section (dalle/sampling_schema.py) decides.
    p.add_argument("--n", type=int, default=None, help="candidates sampled per prompt (sampling.candidates)")
    p.add_argument("--top", type=int, default=None, help="images kept per prompt, 0 = all n (sampling.keep)")
    p.add_argument("--condition-scale", type=float, default=None,
                   help="super-conditioning scale, 1 = off (sampling.guidance)")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature, 0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest codes, 0 = off")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, 1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", default=None, help="CLIP checkpoint for reranking (dalle convert clip / clip_shapes); "
                                                "'' = no reranking (sampling.clip_checkpoint)")
    p.add_argument("--image-prompt", default=None, metavar="FILE",
                   help="image completion: keep the top --keep-rows code rows of this picture (cropped to its "
                        "centered square) and draw the rest")
    p.add_argument("--keep-rows", type=int, default=None, metavar="K",
                   help="code rows of --image-prompt kept, 1 to the model's rows - 1")
    p.add_argument("--method", choices=METHODS, default="autoregressive",
                   help="autoregressive (default): sample the model's image tokens; clip-guided: optimise a VQGAN's "
                        "latents against CLIP")
    p.add_argument("--vqgan", default=None, help="clip-guided: the VQGAN (default: --checkpoint's)")
    p.add_argument("--steps", type=int, default=None, help="clip-guided: optimisation steps (clip_guided.steps)")
    p.add_argument("--lr", type=float, default=None, help="clip-guided: Adam step size (clip_guided.lr)")
    p.add_argument("--cutouts", type=int, default=None, help="clip-guided: CLIP crops per step (clip_guided.cutouts)")
    p.add_argument("--init-image", default=None, metavar="FILE",
                   help="clip-guided: start from this picture's latents instead of noise")
    p.add_argument("--out", default="grid.png", help="grid PNG path")
    p.add_argument("--out-dir", default="", help="also write each image here as PNG")
    p.add_argument("--upscale", type=int, default=4, help="nearest-neighbour upscaling factor of the written PNGs")
    p.add_argument("--decode-kernels", choices=("auto", "native", "xla"), default="auto",
                   help="decode steps on dalle's CPU kernels (native) or XLA's ops (xla); auto (default): native "
                        "wherever they run (float32 on CPU with a C++ compiler)")
    p.add_argument("--dtype", choices=precision.DTYPES, default="float32",
                   help="precision of the model's params and sampling (default float32; bfloat16/float16 halve "
                        "its memory); the VQGAN decodes in float32")
    return p


METHODS = ("autoregressive", "clip-guided")
MAX_SEED = 2 ** 31 - 1  # seeds are int32 in jax's PRNG; prompt i samples with (seed + i) mod 2**31


def check_writable_dir(flag: str, directory: str) -> None:
    """Creates `directory` if needed; ValueError naming `flag` when it cannot be written to."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {directory!r}: cannot create the folder {directory!r} ({e.strerror})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {directory!r}: the folder {directory!r} is not writable")


def check_writable_file(flag: str, path: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder; give a file name such as grid.png")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        check_writable_dir(flag, folder)
    except ValueError as e:
        raise ValueError(f"{flag} {path!r}: {str(e).split(': ', 1)[1]}") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path!r} exists and is not writable")


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise ValueError(f"--prompts-file {args.prompts_file!r} does not exist or is not a file")
        try:
            with open(args.prompts_file, encoding="utf-8") as f:
                prompts += [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise ValueError(f"--prompts-file {args.prompts_file!r} is not UTF-8 text (byte {e.start})") from None
        except OSError as e:
            raise ValueError(f"--prompts-file {args.prompts_file!r} cannot be read: {e.strerror}") from None
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
        # Flags checked before the model loads; flags against the model's section once it has (`settings`).
        if args.n is not None and args.n < 1:
            raise ValueError(f"--n = {args.n} must be >= 1")
        if args.top is not None and (args.top < 0 or (args.n is not None and args.top > args.n)):
            raise ValueError(f"--top = {args.top} must be between 0 (all) and --n = {args.n}")
        if args.upscale < 1:
            raise ValueError(f"--upscale = {args.upscale} must be >= 1")
        if (args.image_prompt is None) != (args.keep_rows is None):
            raise ValueError("image completion needs both --image-prompt FILE and --keep-rows K")
        check_method_flags(args)
        if args.image_prompt is not None and not os.path.isfile(args.image_prompt):
            raise ValueError(f"--image-prompt {args.image_prompt!r} does not exist or is not a file")
        if args.keep_rows is not None and args.keep_rows < 1:
            raise ValueError(f"--keep-rows = {args.keep_rows} must be >= 1")
        if not 0 <= args.seed <= MAX_SEED:
            raise ValueError(f"--seed = {str(args.seed)[:30]} must be between 0 and {MAX_SEED}")
        # Before sampling, which may take minutes: where the images go must be writable.
        check_writable_file("--out", args.out)
        if args.out_dir:
            check_writable_dir("--out-dir", args.out_dir)
    except ValueError as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    if args.method == "clip-guided":
        return clip_guided_main(args, prompts)
    direct = direct_generator(args.checkpoint)
    if direct is not None:
        return direct_main(args, prompts, direct)
    from tqdm import tqdm

    from dalle import generation, sampling_schema

    try:
        gen = generation.Generator.from_checkpoint(args.checkpoint, decode_kernels=args.decode_kernels,
                                                   dtype=args.dtype)
        settings = gen.settings(flag_overrides(args), FLAG_LABELS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clip_dir = sampling_schema.rerank_clip(settings, from_user=args.clip is not None)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        scorer = (generation.load_reranker(clip_dir, gen.config.data.get("unknown_words", "keep")) if clip_dir
                  else None)
        image_prompt = None
        if args.image_prompt is not None:
            image_prompt = gen.completion_prompt(args.image_prompt, args.keep_rows,
                                                 labels=("--image-prompt", "--keep-rows"))
    except (generation.GenerationError, FileNotFoundError, ValueError) as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    print(f"sampling: {settings.describe(reranked=scorer is not None)} (the model's sampling section; flags "
          f"override it)", file=sys.stderr)
    keep = settings.kept
    rows = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for i, prompt in enumerate(tqdm(prompts, desc="generate", unit="prompt", file=sys.stderr)):
                images = gen.images([prompt], num_images=settings.candidates, seed=(args.seed + i) % (MAX_SEED + 1),
                                    image_prompt=image_prompt, **settings.sampler_kwargs())
                if scorer is not None:
                    order = scorer(prompt, images)[:keep]
                else:
                    order = list(range(keep))
                rows.append(images[order])
        except generation.GenerationError as e:
            print(f"dalle generate: error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not write_images(args, rows, keep):
        return 1
    completed = f", completing the top {args.keep_rows} code rows of {args.image_prompt}" if args.keep_rows else ""
    print(f"wrote {args.out} ({len(prompts)} prompt(s) x {keep} image(s)"
          f"{', reranked by CLIP' if scorer else ''}{completed})")
    return 0


def write_images(args: argparse.Namespace, rows: list, cols: int) -> bool:
    """The grid (one row per prompt) at --out and each image under --out-dir; False (said on stderr) when a file
    cannot be written."""
    import numpy as np

    from dalle import generation

    try:
        generation.save_png(args.out, generation.make_grid(np.concatenate(rows), cols=cols), scale=args.upscale)
        if args.out_dir:
            for i, imgs in enumerate(rows):
                for j, img in enumerate(imgs):
                    generation.save_png(os.path.join(args.out_dir, f"{i:03d}_{j:02d}.png"), img, scale=args.upscale)
    except OSError as e:
        print(f"dalle generate: error: cannot write {e.filename or args.out!r}: {e.strerror or e}", file=sys.stderr)
        return False
    return True


def direct_generator(checkpoint: str) -> str | None:
    """The `direct_generator` of the checkpoint's model kind (dalle/kinds: a GAN draws without image tokens), or
    None for token models and for paths that are no model (the token path reports those)."""
    from dalle import kinds, model_dir, registry

    try:
        config = model_dir.config_of(checkpoint)
        return kinds.of(config).direct_generator if "model" in config else None
    except (model_dir.CheckpointError, OSError, ValueError, registry.UnknownNameError):
        return None


def direct_main(args: argparse.Namespace, prompts: list[str], target: str) -> int:
    """`dalle generate --checkpoint GAN_DIR`: --n images per prompt in one pass each, no sampling settings."""
    from dalle import generation, registry

    given = [flag for flag, attr in _AUTOREGRESSIVE_ONLY if getattr(args, attr) is not None]
    given += ["--clip"] if args.clip else []
    if given:
        print(f"dalle generate: error: {', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to "
              f"{args.checkpoint} (a model that draws without image tokens)", file=sys.stderr)
        return 2
    n = args.n or 1
    try:
        gen = registry.resolve(target).from_checkpoint(args.checkpoint)
        rows = [gen.images([p], num_images=n, seed=(args.seed + i) % (MAX_SEED + 1)) for i, p in enumerate(prompts)]
    except (generation.GenerationError, FileNotFoundError) as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    if not write_images(args, rows, n):
        return 1
    print(f"wrote {args.out} ({len(prompts)} prompt(s) x {n} image(s), {target.rsplit(':', 1)[-1]})")
    return 0


# Flags of one method only: (flag, attribute).
_AUTOREGRESSIVE_ONLY = (("--top", "top"), ("--condition-scale", "condition_scale"), ("--temperature", "temperature"),
                        ("--top-k", "top_k"), ("--top-p", "top_p"), ("--image-prompt", "image_prompt"),
                        ("--keep-rows", "keep_rows"))
_CLIP_GUIDED_ONLY = (("--vqgan", "vqgan"), ("--steps", "steps"), ("--lr", "lr"), ("--cutouts", "cutouts"),
                     ("--init-image", "init_image"))


def check_method_flags(args: argparse.Namespace) -> None:
    """A flag of the other method is an error, not silently ignored."""
    other = _AUTOREGRESSIVE_ONLY if args.method == "clip-guided" else _CLIP_GUIDED_ONLY
    given = [flag for flag, attr in other if getattr(args, attr) is not None]
    if args.method == "clip-guided" and args.decode_kernels != "auto":
        given.append("--decode-kernels")
    if given:
        raise ValueError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --method "
                         f"{args.method}")
    if args.init_image is not None and not os.path.isfile(args.init_image):
        raise ValueError(f"--init-image {args.init_image!r} does not exist or is not a file")


def guiding_models(args: argparse.Namespace) -> tuple[str, str]:
    """(VQGAN dir, CLIP dir) for --method clip-guided: the flags, else those of --checkpoint's model (its
    data.vqgan_checkpoint and the sampling section's clip_checkpoint)."""
    from dalle import model_dir as checkpoint

    vqgan, clip = args.vqgan, args.clip
    if vqgan is None or not clip:
        if not os.path.exists(args.checkpoint):
            raise FileNotFoundError(f"--method clip-guided needs --vqgan DIR and --clip DIR (or a --checkpoint whose "
                                    f"model names them; {args.checkpoint!r} does not exist)")
        config = checkpoint.config_of(args.checkpoint)
        home = checkpoint.exported_model_dir(args.checkpoint) or args.checkpoint
        if vqgan is None:
            vqgan = config.get("data", {}).get("vqgan_checkpoint", "") if "data" in config else ""
            vqgan = checkpoint.resolve_path(home, vqgan) if vqgan else ""
        if not clip:
            clip = config.get("sampling", {}).get("clip_checkpoint", "") if "sampling" in config else ""
            clip = checkpoint.resolve_path(home, clip) if clip else ""
    if not vqgan or not clip:
        missing = " and ".join(f for f, v in (("--vqgan", vqgan), ("--clip", clip)) if not v)
        raise FileNotFoundError(f"--method clip-guided: {args.checkpoint!r} names no "
                                f"{'VQGAN' if not vqgan else 'CLIP'}; give {missing}")
    return vqgan, clip


def clip_guided_main(args: argparse.Namespace, prompts: list[str]) -> int:
    """`dalle generate --method clip-guided`: n images per prompt, best CLIP similarity first."""
    import numpy as np

    from dalle import clip_guided, generation

    labels = {"steps": "--steps", "lr": "--lr", "cutouts": "--cutouts"}
    try:
        vqgan, clip = guiding_models(args)
        guide = clip_guided.ClipGuided.from_dirs(vqgan, clip, dtype=args.dtype)
        settings = guide.settings({"steps": args.steps, "lr": args.lr, "cutouts": args.cutouts}, labels)
        print(f"clip-guided: {settings.describe()}; VQGAN {vqgan}, CLIP {clip}", file=sys.stderr)
        n = args.n or 1
        rows, scores = [], []
        for i, prompt in enumerate(prompts):
            result = guide.generate([prompt], num_images=n, seed=(args.seed + i) % (MAX_SEED + 1),
                                    init_image=args.init_image, labels=labels, steps=args.steps, lr=args.lr,
                                    cutouts=args.cutouts)
            order = np.argsort(-result.similarities, kind="stable")
            rows.append(result.images[order])
            scores.append(result.similarities[order])
    except (clip_guided.ClipGuidedError, FileNotFoundError, generation.GenerationError) as e:
        print(f"dalle generate: error: {e}", file=sys.stderr)
        return 2
    if not write_images(args, rows, n):
        return 1
    for prompt, s in zip(prompts, scores):
        print(f"{prompt!r}: CLIP similarity {', '.join(f'{v:.3f}' for v in s)}")
    print(f"wrote {args.out} ({len(prompts)} prompt(s) x {n} image(s), clip-guided)")
    return 0


# Which sampling setting each flag overrides (dalle/sampling_schema.py), and how errors name it.
FLAG_LABELS = {"candidates": "--n", "keep": "--top", "guidance": "--condition-scale", "temperature": "--temperature",
               "top_k": "--top-k", "top_p": "--top-p", "clip_checkpoint": "--clip"}


def flag_overrides(args: argparse.Namespace) -> dict:
    """Setting -> flag value (None = not given: the model's section decides)."""
    return {"candidates": args.n, "keep": args.top, "guidance": args.condition_scale, "temperature": args.temperature,
            "top_k": args.top_k, "top_p": args.top_p, "clip_checkpoint": args.clip}
