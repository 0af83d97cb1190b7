"""(d) End-to-end `dalle generate` latency for one prompt on the demo model (outputs/demo/dalle, `make demo`):
the first image (`--n 1`) and 8 images (`--n 8`).

    .venv/bin/python -m benchmarks.bench_generate_latency            # the demo model
    .venv/bin/python -m benchmarks.bench_generate_latency --quick    # a tiny random checkpoint, 1 repeat

Two figures per case:
  * cold: wall time of a fresh `dalle generate "PROMPT" --n N` process, from start to the PNG written (imports,
    checkpoint and VQGAN loading, compilation, sampling, decoding): what a user waits for at the command line;
  * warm: `Generator.images([PROMPT], num_images=N)` in a process that has already served one request (sampling +
    VQGAN decode + PNG-ready uint8 only): what the web demo's second request waits for.
Settings pinned (`PINNED`: condition scale 3, no top-k, no reranking). There is no peer here: dalle-mini cannot
load this model. Without the demo model the result file says so instead of failing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import common

PROMPT = "a red circle"
DEMO = "outputs/demo/dalle"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measured at fixed settings, not the model's `sampling` section (which may rerank with CLIP): the figures stay
# comparable across models and across rewrites of that section.
PINNED = dict(condition_scale=3.0, temperature=1.0, top_k=0, top_p=1.0)
PINNED_FLAGS = ["--condition-scale", "3", "--temperature", "1", "--top-k", "0", "--top-p", "1", "--top", "0",
                "--clip", ""]


def tiny_checkpoint(directory: str) -> str:
    """A random-weight decoder-only model over a random tiny VQGAN and a tiny tokenizer (as tests/tiny_pipeline.py
    builds them, minus the encoded data), saved as a model dir that `dalle generate` accepts."""
    from ml_collections import ConfigDict

    from dalle import model_dir as checkpoint
    from dalle import config as config_lib
    from dalle.data import build
    from dalle.tokenizers import sentencepiece as tokenizer
    from dalle.modeling import model as model_lib
    from tests import data_helpers, tiny_pipeline

    config = data_helpers.shapes_config(directory)
    config.data.vqgan_checkpoint = tiny_pipeline.tiny_vqgan(directory)
    build.build_dataset(config.data)
    tokenizer.train_from_config(config.data)
    c = ConfigDict(config.to_dict())
    c.model = ConfigDict(dict(kind="decoder_only", d_model=32, num_layers=2, num_heads=2, ffn_dim=64, use_glu=False,
                              text_vocab_size=64, image_vocab_size=tiny_pipeline.CODES,
                              max_text_length=c.data.max_text_length, image_length=64))
    c = config_lib.validate(c)
    model = model_lib.build_model(c.model)
    out = os.path.join(directory, "dalle")
    checkpoint.save_model(out, model_lib.random_params(model), c)
    return out


def cold(checkpoint_dir: str, n: int, out_dir: str) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    argv = [sys.executable, "-m", "dalle", "generate", PROMPT, "--n", str(n), "--checkpoint", checkpoint_dir,
            "--out", os.path.join(out_dir, f"grid_{n}.png"), *PINNED_FLAGS]
    t = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny random checkpoint, 1 repeat")
    p.add_argument("--checkpoint", default=DEMO)
    p.add_argument("--repeats", type=int, default=None, help="default 3, quick 1")
    args = p.parse_args(argv)
    from benchmarks import peers as _peers

    _peers.use_results_dir_from_env()
    repeats = args.repeats or (1 if args.quick else 3)
    cmd = ".venv/bin/python -m benchmarks.bench_generate_latency" + (" --quick" if args.quick else "")
    title = "End-to-end `dalle generate` latency (demo model)" + (" (quick smoke run, tiny random model)"
                                                                 if args.quick else "")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = tiny_checkpoint(tmp) if args.quick else os.path.join(ROOT, args.checkpoint)
        if not os.path.exists(ckpt):
            body = (f"Not measured: the demo model `{args.checkpoint}` does not exist on this machine. Run `make demo` "
                    f"first (it trains it), then `{cmd}`.\n")
            common.write_result("generate_latency", title, cmd, body)
            return 0
        from dalle import generation

        rows = []
        for n in (1, 8):
            print(f"generate_latency: n={n}", flush=True)
            colds = [cold(ckpt, n, tmp) for _ in range(repeats)]
            gen = generation.Generator.from_checkpoint(ckpt)
            t = time.perf_counter()
            gen.images([PROMPT], num_images=n, seed=0, **PINNED)
            first = time.perf_counter() - t
            warms = []
            for i in range(repeats):
                t = time.perf_counter()
                gen.images([PROMPT], num_images=n, seed=i + 1, **PINNED)
                warms.append(time.perf_counter() - t)
            m = gen.model
            rows.append((n, f"{statistics.median(colds):.2f} s", f"{first:.2f} s", f"{statistics.median(warms):.3f} s",
                         f"{1e3 * statistics.median(warms) / n:.1f} ms", f"{len(colds)} / {len(warms)}"))
            print(f"  cold {colds}  first in-process {first:.2f}  warm {warms}", flush=True)
        desc = (f"{m.kind}, d {m.config.d_model}, {m.param_count(gen.params) / 1e6:.2f} M params, "
                f"{m.image_length} image tokens, VQGAN {gen.vqgan.tokens_per_side}x{gen.vqgan.tokens_per_side} codes")
    body = (f"Model: `{args.checkpoint if not args.quick else 'tiny random checkpoint'}` ({desc}). Prompt "
            f"\"{PROMPT}\", condition scale 3 (the CLI default).\n\n")
    body += common.table(["images", "cold CLI (process start to PNG)", "first call in-process (incl. compile)",
                          "warm call", "warm per image", "runs (cold / warm)"], rows)
    body += ("\nCold = median wall time of fresh `python -m dalle generate PROMPT --n N` processes. First call = "
             "`Generator.images` right after loading (compiles the decode loop and the VQGAN decoder). Warm = median "
             "of the following calls (sampling + VQGAN decode).\n")
    common.write_result("generate_latency", title, cmd, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
