"""Which image codes the eval scenes need that the text-to-image model's training targets never contain.

A code that is never a training target only ever has its logit pushed down, so the model cannot draw a scene that
needs it, however well it binds words. This encodes each eval prompt's own scene with the VQGAN, counts the codes
missing from (or rare in) the pre-encoded training split, and writes the `composition-codes` section of EVAL.md:

    .venv/bin/python tools/code_coverage.py --encoded outputs/demo/encoded --vqgan outputs/demo/vqgan [--prompts 400]

Object tokens are the token cells whose pixels in the rendered scene are not all background colour.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPLITS = ("validation", "zero_shot")
RARE = 10  # "rare": fewer training occurrences than this


def training_code_counts(encoded_dir: str, codebook_size: int) -> np.ndarray:
    """How often each code occurs in the training split's targets."""
    from dalle.data import encode as encode_lib

    info = encode_lib.read_info(encoded_dir)
    ds = encode_lib.dataset_from_files(encode_lib.split_files(encoded_dir, "train", info), info["format"],
                                       int(info["image_length"]))
    counts = np.zeros(codebook_size, np.int64)
    for batch in ds.map(lambda ex: ex["image_tokens"]).batch(1024).as_numpy_iterator():
        counts += np.bincount(np.asarray(batch).reshape(-1), minlength=codebook_size)[:codebook_size]
    return counts


def object_mask(images: np.ndarray, grid: int) -> np.ndarray:
    """[N, grid*grid] bool: token cells whose pixels are not all the scene's background colour (its most frequent
    pixel), read from the rendered image itself."""
    n, h, w, _ = images.shape
    flat = images.reshape(n, h * w, -1)
    masks = []
    for img in flat:
        colours, counts = np.unique(img, axis=0, return_counts=True)
        masks.append((img != colours[counts.argmax()]).any(-1).reshape(h, w))
    cells = np.stack(masks).reshape(n, grid, h // grid, grid, w // grid)
    return cells.any(axis=(2, 4)).reshape(n, grid * grid)


def scene_stats(tokens: np.ndarray, counts: np.ndarray, obj: np.ndarray) -> dict:
    """Per-scene unseen/rare object tokens of `tokens` [N, L]; `obj` [N, L] marks the tokens covering an object."""
    unseen = (counts[tokens] == 0) & obj
    rare = (counts[tokens] < RARE) & obj
    return {"scenes": len(tokens),
            "object_tokens": float(obj.sum(1).mean()),
            "unseen_tokens": float(unseen.sum() / max(obj.sum(), 1)),
            "rare_tokens": float(rare.sum() / max(obj.sum(), 1)),
            "scenes_with_unseen": float(unseen.any(1).mean()),
            "per_scene_unseen": unseen.any(1)}


def measure(data, encoded_dir: str, vqgan_dir: str, prompts_per_split: int) -> dict:
    from dalle import kinds
    from dalle.eval import compositional

    export = os.path.join(vqgan_dir, "model") if os.path.isdir(os.path.join(vqgan_dir, "model")) else vqgan_dir
    vq = kinds.load_image_tokenizer(export)
    counts = training_code_counts(encoded_dir, int(vq.codebook_size))
    out = {"codes": int(vq.codebook_size), "codes_in_training": int((counts > 0).sum()), "splits": {}}
    for split in SPLITS:
        prompts = compositional.shapes_prompts(data, split, prompts_per_split)
        images = compositional.render_prompts(data, prompts)
        tokens = np.concatenate([np.asarray(vq.encode(images[i:i + 64])).reshape(len(images[i:i + 64]), -1)
                                 for i in range(0, len(images), 64)])
        grid = int(round(np.sqrt(tokens.shape[1])))
        stats = scene_stats(tokens, counts, object_mask(np.asarray(images), grid))
        flags = stats.pop("per_scene_unseen")
        by_kind = collections.defaultdict(list)
        for p, flag in zip(prompts, flags):
            for kind in compositional.prompt_kinds(p.request, p.scene):
                if kind.startswith("held_out:"):
                    by_kind[kind.split(":", 1)[1]].append(bool(flag))
        stats["held_out"] = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
        out["splits"][split] = stats
    return out


def render(r: dict, command: str, prompts: int) -> str:
    lines = ["## Composition: image codes the model never saw as targets", "",
             f"Command: `{command}`.", "",
             f"The first {prompts} prompts of each split: their own scenes encoded by the VQGAN, each code looked up in "
             f"the pre-encoded training split. {r['codes_in_training']} of the {r['codes']} codes occur in training "
             "targets. A code that never does only ever has its logit pushed down in training, so no sampler reaches "
             "it: a scene that needs one can only be drawn with a substitute.", "",
             "| split | object tokens per scene | object tokens with an unseen code | with a rare code "
             f"(< {RARE} in training) | scenes needing an unseen code |", "|---|---|---|---|---|"]
    for split in SPLITS:
        s = r["splits"][split]
        lines.append(f"| {split} | {s['object_tokens']:.1f} | {100 * s['unseen_tokens']:.1f}% | "
                     f"{100 * s['rare_tokens']:.1f}% | {100 * s['scenes_with_unseen']:.1f}% |")
    held = r["splits"]["zero_shot"]["held_out"]
    if held:
        lines += ["", "Zero-shot scenes needing an unseen code, by held-out pair: "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in held.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="configs/shapes_tiny.py", help="config whose data section is the world")
    p.add_argument("--encoded", required=True, help="the `dalle encode` output the model trained on")
    p.add_argument("--vqgan", required=True, help="the VQGAN (trainer workdir or export) that encoded it")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--no_write", action="store_true", help="print the section instead of writing EVAL.md")
    args = p.parse_args(argv)
    from dalle import config as config_lib
    from tools import eval_report

    data = config_lib.load_config(args.data, []).data
    result = measure(data, args.encoded, args.vqgan, args.prompts)
    command = ".venv/bin/python tools/code_coverage.py " + " ".join(argv)
    body = render(result, command, args.prompts)
    print(body)
    if args.no_write:
        return 0
    eval_report.write_section("composition-codes", body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
