"""Which image codes the eval scenes need, and whether training shows them with the object's colour or shape.

A code that is never a training target only ever has its logit pushed down, so the model cannot draw a scene that
needs it, however well it binds words. This encodes each eval prompt's own scene with each image tokenizer
(VQGAN or dVAE), counts the codes missing from (or rare in) the pre-encoded training split, and writes the
`composition-codes` section of EVAL.md:

    .venv/bin/python tools/code_coverage.py --tokenizer VQGAN outputs/demo/encoded outputs/demo/vqgan \
        [--tokenizer dVAE outputs/demo/encoded_dvae outputs/demo/dvae] [--prompts 400] [--train_scenes 2000]

It also asks how a tokenizer shares codes between objects: for each object token (a cell one object alone covers)
of a held-out pair such as "red star", is its code one that training scenes show in red objects of other shapes,
in stars of other colours, both, or neither? A code seen with the colour can be reached from the colour word and
one seen with the shape from the shape word; a code seen with neither can only be guessed. The same shares for
validation objects say how specific to one colour or one shape the tokenizer's codes are.

Object tokens are the token cells whose pixels in the rendered scene are not all background colour.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

from typing import Any, Callable, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPLITS = ("validation", "zero_shot")
RARE = 10  # "rare": fewer training occurrences than this; also "training shows the code with" needs this many
GROUPS = ("validation objects", "held-out-pair objects")


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


def object_cells(world: Any, scene: Any, grid: int) -> np.ndarray:
    """[objects, grid*grid] bool: the token cells each object alone covers (object_mask of a render with only that
    object), less the cells two objects share, so every cell speaks for one object."""
    from dalle.data.shapes import Scene

    alone = np.stack([world.render(Scene((o,), scene.background)) for o in scene.objects])
    masks = object_mask(alone, grid)
    return masks & (masks.sum(0, keepdims=True) == 1)


def object_tokens(world: Any, scenes: Sequence[Any], tokens: np.ndarray, grid: int,
                  keep: Callable[[Any], bool] = lambda o: True) -> np.ndarray:
    """[T, 4] int (code, colour index, shape index, object number) of every object token of `scenes` ([N, L]
    codes) whose object `keep` accepts; objects are numbered in order from 0."""
    rows, number = [], 0
    for scene, codes in zip(scenes, tokens):
        for o, cells in zip(scene.objects, object_cells(world, scene, grid)):
            if keep(o) and cells.any():
                c, s = world.colors.index(o.color), world.shapes.index(o.shape)
                rows += [(int(code), c, s, number) for code in codes[cells]]
                number += 1
    return np.asarray(rows, np.int64).reshape(-1, 4)


def attribute_counts(train: np.ndarray, codebook_size: int, colors: int, shapes: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """[K, colours] and [K, shapes] counts of each code among the training object tokens `train` (object_tokens)."""
    by_color = np.zeros((codebook_size, colors), np.int64)
    by_shape = np.zeros((codebook_size, shapes), np.int64)
    np.add.at(by_color, (train[:, 0], train[:, 1]), 1)
    np.add.at(by_shape, (train[:, 0], train[:, 2]), 1)
    return by_color, by_shape


def sharing_stats(by_color: np.ndarray, by_shape: np.ndarray, toks: np.ndarray) -> dict:
    """How training shows the codes of the object tokens `toks` (object_tokens): the mean share of each code's
    training object uses in the token's own colour and in its own shape, and the fraction of tokens whose code
    occurs (at least RARE times) with both, the colour only, the shape only, or neither; and the fraction of
    objects all of whose tokens' codes occur with the object's colour or its shape."""
    if not len(toks):
        return {"tokens": 0}
    code, c, s, obj = toks[:, 0], toks[:, 1], toks[:, 2], toks[:, 3]
    total = by_color[code].sum(1)
    in_color, in_shape = by_color[code, c], by_shape[code, s]
    share = lambda k: float(np.mean(np.where(total > 0, k / np.maximum(total, 1), 0.0)))
    with_color, with_shape = in_color >= RARE, in_shape >= RARE
    return {"tokens": int(len(toks)), "color_share": share(in_color), "shape_share": share(in_shape),
            "both": float(np.mean(with_color & with_shape)), "color_only": float(np.mean(with_color & ~with_shape)),
            "shape_only": float(np.mean(~with_color & with_shape)),
            "neither": float(np.mean(~with_color & ~with_shape)),
            "never_in_an_object": float(np.mean(total == 0)), "objects": int(len(np.unique(obj))),
            "objects_reachable": float(np.mean([np.all((with_color | with_shape)[obj == k])
                                                for k in np.unique(obj)]))}


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


def encode_all(tokenizer: Any, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(tokenizer.encode(images[i:i + 64])).reshape(len(images[i:i + 64]), -1)
                           for i in range(0, len(images), 64)])


def measure(data, encoded_dir: str, tokenizer_dir: str, prompts_per_split: int, train_scenes: int = 0) -> dict:
    """`train_scenes`: how many training scenes give the codes' colours and shapes (0: the whole train split).
    The scenes are redrawn from `data`'s world, so it must be the world `encoded_dir` holds (checked by size)."""
    from dalle import kinds, paths
    from dalle.data import encode as encode_lib
    from dalle.data.shapes import ShapesWorld
    from dalle.eval import compositional

    export = paths.join(tokenizer_dir, "model") if paths.isdir(paths.join(tokenizer_dir, "model")) else tokenizer_dir
    tokenizer = kinds.load_image_tokenizer(export)
    size = int(tokenizer.codebook_size)
    counts = training_code_counts(encoded_dir, size)
    world = ShapesWorld.from_config(data)
    info = encode_lib.read_info(encoded_dir)
    encoded_train = int(info["splits"]["train"]["count"])
    if encoded_train != int(data["train_size"]) or int(info.get("image_size", world.image_size)) != world.image_size:
        raise ValueError(f"{encoded_dir!r} holds {encoded_train} training images of {info.get('image_size')} px, "
                         f"the world of --data {data['train_size']} of {world.image_size} px: give --data the config "
                         "the model trained with")
    if train_scenes > encoded_train:
        raise ValueError(f"--train_scenes {train_scenes}: the train split of {encoded_dir!r} has {encoded_train}")
    train_scenes = train_scenes or encoded_train
    out = {"codes": size, "codes_in_training": int((counts > 0).sum()), "splits": {}, "train_scenes": train_scenes}
    scenes = [world.scene("train", i) for i in range(train_scenes)]
    train_tokens = encode_all(tokenizer, np.stack([world.render(sc) for sc in scenes]))
    grid = int(round(np.sqrt(train_tokens.shape[1])))
    by_color, by_shape = attribute_counts(object_tokens(world, scenes, train_tokens, grid), size,
                                          len(world.colors), len(world.shapes))
    out["codes_in_train_objects"] = int((by_color.sum(1) > 0).sum())
    sharing = {}
    for split in SPLITS:
        prompts = compositional.shapes_prompts(data, split, prompts_per_split)
        images = compositional.render_prompts(data, prompts)
        tokens = encode_all(tokenizer, images)
        stats = scene_stats(tokens, counts, object_mask(np.asarray(images), grid))
        flags = stats.pop("per_scene_unseen")
        by_kind = collections.defaultdict(list)
        for p, flag in zip(prompts, flags):
            for kind in compositional.prompt_kinds(p.request, p.scene):
                if kind.startswith("held_out:"):
                    by_kind[kind.split(":", 1)[1]].append(bool(flag))
        stats["held_out"] = {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}
        out["splits"][split] = stats
        held = lambda o: any(d.matches(o) for d in world.held_out_pairs)
        group = GROUPS[0] if split == "validation" else GROUPS[1]
        keep = (lambda o: True) if split == "validation" else held
        toks = object_tokens(world, [p.scene for p in prompts], tokens, grid, keep)
        sharing[group] = dict(sharing_stats(by_color, by_shape, toks),
                              pairs=sorted({f"{world.colors[c]} {world.shapes[s]}" for c, s in toks[:, 1:3].tolist()}))
    out["sharing"] = sharing
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


SECTION = "composition-codes"
TITLE = "Composition: image codes the model never saw as targets, and what they are shared with"


def render(results: Sequence[tuple[str, dict]], command: str, prompts: int, title: str = TITLE) -> str:
    """The `composition-codes` section: one row per tokenizer (name, measure() result) in each table."""
    lines = [f"## {title}", "",
             f"Command: `{command}`.", "",
             f"The first {prompts} prompts of each split: their own scenes encoded by each image tokenizer, each code "
             "looked up in the pre-encoded training split of the text-to-image model trained on that tokenizer's "
             "codes. A code that never occurs there only ever has its logit pushed down in training, so no sampler "
             "reaches it: a scene that needs one can only be drawn with a substitute.", "",
             "| tokenizer | split | codes in training targets | object tokens per scene | object tokens with an "
             f"unseen code | with a rare code (< {RARE} in training) | scenes needing an unseen code |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results:
        for split in SPLITS:
            s = r["splits"][split]
            lines.append(f"| {name} | {split} | {r['codes_in_training']} of {r['codes']} | {s['object_tokens']:.1f} | "
                         f"{_pct(s['unseen_tokens'])} | {_pct(s['rare_tokens'])} | {_pct(s['scenes_with_unseen'])} |")
    held = [(name, r["splits"]["zero_shot"]["held_out"]) for name, r in results if r["splits"]["zero_shot"]["held_out"]]
    if held:
        lines += ["", "Zero-shot scenes needing an unseen code, by held-out pair: " + "; ".join(
            f"{name}: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in h.items()) for name, h in held) + "."]
    train = sorted({r["train_scenes"] for _, r in results})
    lines += ["", "### What training shows each object code with", "",
              f"The object tokens (cells one object alone covers) of the first {', '.join(map(str, train))} training "
              "scenes (the text-to-image model's training targets), encoded by the same tokenizer, give each code's colours and shapes. For each object token of "
              "the eval scenes: the share of its code's training uses that are in objects of the token's own colour "
              "and of its own shape, and whether training shows the code (at least "
              f"{RARE} times) with the object's colour and its shape (in different objects, for a held-out pair), "
              "with one of them, or with neither. A held-out pair's token whose code training shows with its colour "
              "can be reached from the colour word, with its shape from the shape word; with neither, from no word "
              "of the caption. Last column: the objects every token of which is reachable from one of its words.", "",
              "| tokenizer | objects | object tokens | share in its colour | share in its shape | with colour and "
              "shape | colour only | shape only | neither | code in no training object | objects reachable |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results:
        for group in GROUPS:
            g = r["sharing"].get(group, {"tokens": 0})
            if not g["tokens"]:
                continue
            lines.append(f"| {name} | {group} | {g['tokens']} | {_pct(g['color_share'])} | {_pct(g['shape_share'])} | "
                         f"{_pct(g['both'])} | {_pct(g['color_only'])} | {_pct(g['shape_only'])} | "
                         f"{_pct(g['neither'])} | {_pct(g['never_in_an_object'])} | "
                         f"{_pct(g['objects_reachable'])} of {g['objects']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="configs/shapes_tiny.py", help="config whose data section is the world")
    p.add_argument("--tokenizer", nargs=3, action="append", required=True, metavar=("NAME", "ENCODED", "DIR"),
                   help="a name, the `dalle encode` output the model trained on, and the image tokenizer (trainer "
                        "workdir or export) that encoded it; repeat for more")
    p.add_argument("--prompts", type=int, default=400)
    p.add_argument("--train_scenes", type=int, default=0,
                   help="training scenes whose object codes are counted (default: the whole train split)")
    p.add_argument("--no_write", action="store_true", help="print the section instead of writing EVAL.md")
    p.add_argument("--section", default=SECTION, help="the EVAL.md section to write (e.g. another world)")
    p.add_argument("--title", default=TITLE, help="its heading")
    args = p.parse_args(argv)
    if args.prompts < 1 or args.train_scenes < 0:
        p.error(f"--prompts ({args.prompts}) must be at least 1 and --train_scenes ({args.train_scenes}) at least 0")
    from dalle import config as config_lib
    from dalle import paths

    for name, encoded, directory in args.tokenizer:
        if "|" in name:
            p.error(f"--tokenizer {name!r}: a name cannot hold '|' (it is a table cell)")
        for what, path in (("ENCODED", encoded), ("DIR", directory)):
            if not paths.isdir(path):
                p.error(f"--tokenizer {name}: {what} {path!r} is not a directory")
    from tools import eval_report

    data = config_lib.load_config(args.data, []).data
    results = [(name, measure(data, encoded, directory, args.prompts, args.train_scenes))
               for name, encoded, directory in args.tokenizer]
    command = ".venv/bin/python tools/code_coverage.py " + " ".join(
        f'"{a}"' if " " in a else a for a in argv)
    body = render(results, command, args.prompts, args.title)
    print(body)
    if args.no_write:
        return 0
    eval_report.write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
