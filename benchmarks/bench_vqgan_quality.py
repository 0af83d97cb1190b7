"""Image-tokenizer quality: train a CPU preset (a VQGAN, or with --config configs/dvae_shapes.py OpenAI's dVAE;
configs/dvae_emoji.py on the emoji data) for at most N minutes, then measure validation PSNR and codebook usage on
its data's validation images, and save originals vs reconstructions (docs/<kind>[_<source>]_reconstructions.png).

    .venv/bin/python -m benchmarks.bench_vqgan_quality [--minutes 10] [--workdir outputs/bench/vqgan_f4_32]
    .venv/bin/python -m benchmarks.bench_vqgan_quality --config configs/dvae_shapes.py --minutes 12 \
        --workdir outputs/bench/dvae_shapes

Goal (VQGAN issue): PSNR >= 28 dB on validation images and >= 50% of the codebook in use after <= 10 minutes
here; the dVAE's figures are reported against the same bar. An existing workdir is evaluated as it is (delete it
to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def validation_images(data_config, n: int) -> np.ndarray:
    """The first n validation images [n, S, S, 3] uint8 of the run's data: the shapes world's renders, or the
    first n of another image source's validation split (all of them when it has fewer)."""
    from dalle.data import image_batches, shapes

    if data_config.source == "shapes":
        world = shapes.ShapesWorld.from_config(data_config)
        return np.stack([world.render(world.scene("validation", i)) for i in range(n)])
    n = min(n, image_batches.split_size(data_config, "validation"))
    if n == 0:
        raise SystemExit(f"data.source = {data_config.source!r} has no validation images to measure on")
    # One batch of all n (small images): the iterator drops a partial last batch.
    return np.asarray(next(image_batches.image_batches(data_config, "validation", n, num_examples=n))["image"])


def evaluate(model_dir: str, data_config, n: int = 1000) -> dict:
    from dalle import kinds, sharding

    mesh = sharding.make_mesh(("data",), (1,))
    vq = kinds.load_image_tokenizer(model_dir, mesh=mesh)
    images = validation_images(data_config, n)
    n = len(images)
    codes, recon = [], []
    for i in range(0, n, 100):
        c = vq.encode(images[i:i + 100])
        codes.append(c)
        recon.append(vq.decode(c))
    codes, recon = np.concatenate(codes), np.concatenate(recon)
    x = images.astype(np.float64) / 255.0
    mse = np.mean((np.clip(recon, 0, 1) - x) ** 2, axis=(1, 2, 3))
    psnr = float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))
    used = len(np.unique(codes)) / vq.codebook_size
    return {"psnr": psnr, "codebook_usage": used, "codebook_size": int(vq.codebook_size), "images": n,
            "recon": recon, "originals": images}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/vqgan_f4_32.py")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workdir", default="outputs/bench/vqgan_f4_32")
    args = p.parse_args()
    from dalle import cli, generation
    from dalle import model_dir as checkpoint

    t0 = time.time()
    if not os.path.exists(os.path.join(args.workdir, "model", "config.json")):
        code = cli.main(["train", "--config", args.config, "--workdir", args.workdir,
                         f"--config.train.max_minutes={args.minutes}"])
        if code:
            raise SystemExit(f"training failed with exit code {code}")
    trained_now = time.time() - t0 > 60
    from dalle.train import reporting

    run = reporting.run_summary(args.workdir, "train/psnr")
    with open(os.path.join(args.workdir, "config.json")) as f:  # the training run's config (data + model)
        config = checkpoint.ConfigDict(checkpoint._tuplify(json.load(f)))
    r = evaluate(os.path.join(args.workdir, "model"), config.data)
    k = 8
    grid = generation.make_grid(np.concatenate([r["originals"][:k],
                                                (np.clip(r["recon"][:k], 0, 1) * 255).round().astype(np.uint8)]),
                                cols=k)
    kind = config.model.kind
    source = config.data.source
    suffix = "" if source == "shapes" else f"_{source}"  # one section (and picture) per tokenizer kind and data
    picture = f"docs/{kind}{suffix}_reconstructions.png"
    generation.save_png(os.path.join(ROOT, picture), grid, scale=4)
    ok = r["psnr"] >= 28 and r["codebook_usage"] >= 0.5
    body = common.table(
        ["config", "budget", "steps trained", "validation PSNR", "codebook in use", "goal (>= 28 dB, >= 50%)"],
        [(f"`{args.config}`", f"{args.minutes:g} min", run["steps"], f"{r['psnr']:.2f} dB",
          f"{100 * r['codebook_usage']:.1f}% of {r['codebook_size']}", "met" if ok else "NOT met")])
    what = (f"validation renders of the shapes world ({config.data.image_size} px, {config.data.max_objects} "
            f"object(s) max)" if source == "shapes" else
            f"validation images of data.source {source} ({config.data.image_size} px)")
    body += (f"\nMeasured on {r['images']} {what}; PSNR of the {kind} round trip in [0, 1]; usage = distinct "
             f"codes over those images. Training: {run['minutes'] or 0:.1f} min by its metrics.jsonl"
             f"{'' if trained_now else ' (an existing workdir, evaluated as it was)'}. "
             f"Top: originals, bottom: reconstructions ({picture}).\n\n"
             f"![originals vs reconstructions]({picture})\n")
    title = {"vqgan": "VQGAN", "dvae": "dVAE (OpenAI DALL·E's tokenizer)"}.get(kind, kind)
    data_name = "the shapes data" if source == "shapes" else f"the {source} data"
    common.write_result(f"{kind}{suffix}_quality", f"{title} quality on {data_name} (CPU preset, time-boxed)",
                        ".venv/bin/python -m benchmarks.bench_vqgan_quality"
                        + (f" --config {args.config}" if args.config != p.get_default("config") else "")
                        + f" --minutes {args.minutes:g}"
                        + (f" --workdir {args.workdir}" if args.workdir != p.get_default("workdir") else ""), body)


if __name__ == "__main__":
    main()
