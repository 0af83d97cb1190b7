"""Inference precision (issue #17 item 4): config/mini generation in bfloat16 vs float32 side by side, how many
greedy image tokens bf16 keeps, and the weight memory of config/mini and config/mega per dtype.

    .venv/bin/python -m benchmarks.bench_precision            # full: config/mini, batch 1 and 8 -> results/precision.md
    .venv/bin/python -m benchmarks.bench_precision --decode-kernels xla   # every dtype on XLA's ops -> precision_xla.md
    .venv/bin/python -m benchmarks.bench_precision --quick    # tiny config, 16 image tokens, 1 repeat

A full run compiles each dtype's loop once per batch, warms it up and times it `--repeats` times, then compiles and
runs one greedy call per dtype: minutes on a 2-core CPU, most of it the batch-8 calls.

Both dtypes run in one process on the same random fp32 weights, cast the way `generation.Generator(dtype=...)`
casts them (`dalle.precision.cast`) and decoded with `compute_dtype` = that dtype, with the settings of the
generation benchmark (condition scale 10, top-k 50, same prompts and seed). Each dtype's loop is compiled ahead of
time (compile reported apart), warmed up once, then the dtypes are timed interleaved, the order rotating every
round. Fidelity: one greedy call (top-k 1, same prompts) per dtype at the largest batch; image tokens that match the
reference dtype's (the first of `--dtypes`) position by position, and where each image first departs from it.
Weight memory: parameter count x bytes per dtype, from `jax.eval_shape` of the real model init (nothing allocated).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

from benchmarks import common
from benchmarks.bench_generation import (CONDITION_SCALE, IMAGE, QUICK_IMAGE, QUICK_TEXT, TEXT, TOP_K, describe,
                                         fmt_s, model_configs)

DEFAULT_DTYPES = "float32,bfloat16"
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MEMORY_PRESETS = ("mini", "mega")  # dalle.modeling.presets: dalle-mini's config/mini and config/mega


# --------------------------------------------------------------------------------------------------------------
# Weight memory (no allocation)
# --------------------------------------------------------------------------------------------------------------
def weight_memory(preset: str) -> dict[str, Any]:
    """Parameter count of `presets.<preset>()` and its weight bytes per dtype, from the shapes `jax.eval_shape`
    gives `model.init`: the count of the model we actually build, without allocating gigabytes to learn it."""
    import jax
    import numpy as np

    from dalle import precision
    from dalle.modeling import model as model_lib, presets

    model = model_lib.build_model(getattr(presets, preset)())
    leaves = jax.tree_util.tree_leaves(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    floating = sum(int(np.prod(x.shape)) for x in leaves if precision.is_floating(x))
    other = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves if not precision.is_floating(x))
    count = sum(int(np.prod(x.shape)) for x in leaves)
    return {"params": count, "bytes": {d: floating * BYTES[d] + other for d in BYTES}}


def memory_table(presets_: tuple[str, ...] = MEMORY_PRESETS) -> str:
    """The markdown table of `weight_memory` for each preset (GB = 1e9 bytes)."""
    rows = []
    for name in presets_:
        m = weight_memory(name)
        rows.append((f"config/{name}", f"{m['params'] / 1e6:.2f} M",
                     *(f"{m['bytes'][d] / 1e9:.2f}" for d in ("float32", "bfloat16", "float16"))))
    return common.table(["config", "params", "float32 GB", "bfloat16 GB", "float16 GB"], rows)


# --------------------------------------------------------------------------------------------------------------
# Fidelity
# --------------------------------------------------------------------------------------------------------------
def agreement(reference: Any, other: Any) -> dict[str, Any]:
    """How far greedy codes `other` [rows, length] follow `reference`: matching positions, whole images equal, and
    per image the first position that differs (the length when none does). Decoding is autoregressive, so after the
    first difference the two images condition on different prefixes: the first difference says what bf16's
    rounding changes, the matching count what it does to the image."""
    import numpy as np

    ref, got = np.asarray(reference), np.asarray(other)
    if ref.shape != got.shape:
        raise ValueError(f"codes of shape {ref.shape} and {got.shape} cannot be compared")
    same = ref == got
    first = [int(np.argmin(row)) if not row.all() else row.size for row in same]
    return {"matching": int(same.sum()), "total": int(same.size), "images_equal": int(same.all(axis=1).sum()),
            "images": int(ref.shape[0]), "first_diff": first}


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
def _compile(model, params, text, dtype: str, top_k: int, decode_kernels: str) -> tuple[Callable, float]:
    """`sampling.generate` for one dtype jitted and compiled ahead of time (as bench_generation does); returns the
    executable and its compile seconds."""
    import jax

    from dalle.modeling import sampling

    def gen(params, text, rng):
        return sampling.generate(model, params, text, rng, num_images=1, condition_scale=CONDITION_SCALE,
                                 top_k=top_k, compute_dtype=dtype, decode_kernels=decode_kernels)

    t = time.perf_counter()
    compiled = jax.jit(gen, compiler_options=sampling.decode_compiler_options()).lower(
        params, text, jax.random.PRNGKey(0)).compile()
    return compiled, time.perf_counter() - t


def measure(cfg, dtypes: list[str], batches: list[int], repeats: int, decode_kernels: str,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Times `dtypes` interleaved at every batch and decodes greedily once per dtype at the largest batch.

    Returns {"params", "jax", "timing": {(batch, dtype): {"runs", "median", "compile", "kernels"}},
    "greedy": {dtype: codes}, "greedy_batch", "greedy_kernels": {dtype: kernels}}."""
    import jax
    import numpy as np
    from ml_collections import ConfigDict

    from dalle import precision
    from dalle.modeling import model as model_lib, sampling

    model = model_lib.build_model(ConfigDict(cfg.to_dict()))
    base = model_lib.random_params(model, seed=0)
    params = {d: precision.cast(base, d) for d in dtypes}
    del base
    # the generation benchmark's prompts: batch b takes the first b rows of the same random draw
    all_text = np.random.RandomState(1).randint(1, model.text_vocab_size, (max(batches), model.max_text_length))
    out: dict[str, Any] = {"params": model.param_count(params[dtypes[0]]), "jax": jax.__version__, "timing": {}}
    kernels = {d: sampling.resolve_decode_kernels(decode_kernels, d) for d in dtypes}
    for b in batches:
        text = jax.numpy.asarray(all_text[:b], jax.numpy.int32)
        compiled, keys = {}, {}
        for d in dtypes:
            compiled[d], compile_s = _compile(model, params[d], text, d, TOP_K, decode_kernels)
            keys[d] = jax.random.PRNGKey(0)  # same seed for every dtype
            out["timing"][(b, d)] = {"runs": [], "compile": compile_s, "kernels": kernels[d]}
            log(f"  batch {b} {d}: compiled in {compile_s:.2f} s ({kernels[d]} decode kernels)")

        def call(d: str) -> float:
            keys[d], sub = jax.random.split(keys[d])
            t = time.perf_counter()
            codes = np.asarray(compiled[d](params[d], text, sub))
            seconds = time.perf_counter() - t
            if codes.shape != (b, model.image_length):
                raise RuntimeError(f"{d}: generated {codes.shape}")
            return seconds

        for d in dtypes:
            log(f"  batch {b} {d}: warm-up {call(d):.3f} s")
        for i in range(repeats):
            for d in dtypes[i % len(dtypes):] + dtypes[:i % len(dtypes)]:  # rotate: no dtype always goes first
                out["timing"][(b, d)]["runs"].append(call(d))
                log(f"  batch {b} {d}: run {out['timing'][(b, d)]['runs'][-1]:.3f} s")
        for d in dtypes:
            out["timing"][(b, d)]["median"] = statistics.median(out["timing"][(b, d)]["runs"])
        del compiled
    b = max(batches)
    text = jax.numpy.asarray(all_text[:b], jax.numpy.int32)
    out["greedy"], out["greedy_batch"], out["greedy_kernels"] = {}, b, kernels
    for d in dtypes:
        fn, compile_s = _compile(model, params[d], text, d, 1, decode_kernels)
        out["greedy"][d] = np.asarray(fn(params[d], text, jax.random.PRNGKey(0)))
        log(f"  greedy batch {b} {d}: compiled in {compile_s:.2f} s, decoded")
    return out


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny config, 16 image tokens, 1 repeat (smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per dtype and batch (default 3, quick 1)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--dtypes", default=DEFAULT_DTYPES,
                   help="comma-separated precisions; the first is the reference the others are compared with")
    p.add_argument("--decode-kernels", default="auto", choices=("auto", "xla"),
                   help="auto: native kernels where they can run (float32 and bfloat16, not float16); xla: XLA's "
                        "ops for every dtype, "
                        "which compares the dtypes on the same kernels")
    args = p.parse_args(argv)
    from benchmarks import peers
    from dalle import precision

    peers.use_results_dir_from_env()
    dtypes = [precision.check(d, "--dtypes") for d in args.dtypes.split(",")]
    if len(set(dtypes)) != len(dtypes) or len(dtypes) < 2:
        raise SystemExit(f"--dtypes {args.dtypes!r}: name at least two different precisions")
    batches = [int(x) for x in args.batches.split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    cfg = model_configs(args.quick)["mini"]
    image = QUICK_IMAGE if args.quick else IMAGE
    text = QUICK_TEXT if args.quick else TEXT
    print(f"precision: {describe('mini', cfg, args.quick)}, dtypes {', '.join(dtypes)}, batches {args.batches}",
          flush=True)
    res = measure(cfg, dtypes, batches, repeats, args.decode_kernels)
    body = _timing_section(res, cfg, dtypes, batches, image, text, args)
    body += _fidelity_section(res, cfg, dtypes, args.quick)
    body += "\n### Weight memory per dtype\n\n" + memory_table()
    body += ("\nParameters counted from `jax.eval_shape` of each preset's `model.init` (`dalle.modeling.presets`: "
             "config/mini and config/mega as dalle-mini publishes them in `tools/train/config/mini/config.json` and "
             "`tools/train/config/mega/config.json`, vocabularies of its published checkpoints), times 4 or 2 bytes; "
             "GB = 1e9 bytes. `dalle generate --dtype` casts the weights once, so this is what the text-to-image "
             "model holds (the VQGAN decoder and the generation buffers come on top).\n")
    cmd = (f".venv/bin/python -m benchmarks.bench_precision --batches {args.batches}"
           + (f" --dtypes {args.dtypes}" if args.dtypes != DEFAULT_DTYPES else "")
           + (f" --repeats {args.repeats}" if args.repeats else "")
           + (f" --decode-kernels {args.decode_kernels}" if args.decode_kernels != "auto" else "")
           + (" --quick" if args.quick else ""))
    title = (f"Inference precision on {describe('mini', cfg, args.quick)}: {' vs '.join(dtypes)}"
             + (f", {args.decode_kernels} decode kernels for every dtype" if args.decode_kernels != "auto" else ""))
    name = "precision" if args.decode_kernels == "auto" else f"precision_{args.decode_kernels}"  # both kept
    common.write_result(name, title + (" (quick smoke run)" if args.quick else ""), cmd, body)
    return 0


def _timing_section(res: dict, cfg, dtypes: list[str], batches: list[int], image: int, text: int, args) -> str:
    from benchmarks import decode_floor

    ref = dtypes[0]
    weights = decode_floor.bytes_per_step(cfg, rows=2)["weights"] / decode_floor.BYTES  # decoder weights a step reads
    rows, raw = [], []
    for b in batches:
        for d in dtypes:
            t = res["timing"][(b, d)]
            ratio = t["median"] / res["timing"][(b, ref)]["median"]
            rows.append((describe("mini", cfg, args.quick), f"{res['params'] / 1e6:.2f} M", b, d, t["kernels"],
                         f"{weights * BYTES[d] / 1e9:.3g}", fmt_s(t["median"]), f"{1e3 * t['median'] / image:.1f} ms",
                         f"{b * image / t['median']:.0f}", fmt_s(t["compile"]), "1 (reference)" if d == ref
                         else f"{ratio:.2f}", len(t["runs"])))
            raw.append(f"b{b} {d}: {[round(x, 4) for x in t['runs']]}")
    body = common.table(["config", "params", "batch", "dtype", "decode kernels", "weights GB/step", "per call",
                         "per token step", "tokens/s", "compile", f"time / {ref}'s", "runs"], rows)
    native_note = ""
    if any(res["timing"][(b, d)]["kernels"] == "native" for b in batches for d in dtypes):
        on_xla = [d for d in dtypes if res["timing"][(batches[0], d)]["kernels"] == "xla"]
        native_note = (" `dalle.kernels`' native decode kernels accumulate in float32 and read float32 or bfloat16 "
                       "weights: bfloat16 steps multiply against bfloat16 weight panels (half the bytes a step "
                       "streams, the weights column; widened to float32 in registers) and keep XLA's attention "
                       "over the cache (the cache-attention kernels are float32).")
        if on_xla:
            native_note += (f" On XLA's own ops (no native kernel reads that dtype): {', '.join(on_xla)}; those rows' "
                            "ratios compare the dtypes and the kernels together (`--decode-kernels xla` puts every "
                            "dtype on XLA's ops).")
    return (body + f"\nGuided generation of {image} image tokens from {text} text tokens (condition scale "
            f"{CONDITION_SCALE:g}), top-k {TOP_K}, random weights cast from the same float32 draw, one image per "
            f"prompt, same prompts and seed for every dtype; `compute_dtype` = the weights' dtype, as `dalle generate "
            f"--dtype` runs. Seconds per call are medians of runs interleaved across dtypes (the order rotating "
            f"each round) after ahead-of-time compilation and a warm-up call; per token step = per call / {image}. "
            f"Weights GB/step: the decoder weights every decode step reads (the decode floor table's count) in that "
            f"dtype.{native_note} jax {res['jax']}.\n\nRaw seconds: " + "; ".join(raw) + "\n")


def _fidelity_section(res: dict, cfg, dtypes: list[str], quick: bool) -> str:
    ref = dtypes[0]
    rows = []
    for d in dtypes[1:]:
        a = agreement(res["greedy"][ref], res["greedy"][d])
        first = a["first_diff"]
        rows.append((describe("mini", cfg, quick), res["greedy_batch"], f"{d} vs {ref}",
                     f"{res['greedy_kernels'][d]} / {res['greedy_kernels'][ref]}",
                     f"{a['matching']} / {a['total']}", f"{100 * a['matching'] / a['total']:.1f}%",
                     f"{a['images_equal']} / {a['images']}", f"{statistics.median(first):g}",
                     ", ".join(str(x) for x in first)))
    return ("\n### Greedy image tokens: what a 16-bit dtype changes\n\n"
            + common.table(["config", "prompts", "dtypes", "decode kernels", "tokens equal", "share",
                            "images equal", "median first difference", "first difference per image"], rows)
            + f"\nOne greedy call per dtype (top-k 1, condition scale {CONDITION_SCALE:g}, the timing table's first "
              f"{res['greedy_batch']} prompts) from the same weights; tokens equal counts positions where the image "
              f"tokens match the {ref} ones. Decoding feeds each token back, so after an image's first difference "
              f"(position 0-{cfg.image_length - 1}; {cfg.image_length} = none) it continues from a different "
              f"prefix. Random weights (no trained config/mini is at hand): a trained model's logits are shaped "
              f"differently, so its agreement can differ either way.\n")


if __name__ == "__main__":
    sys.exit(main())
