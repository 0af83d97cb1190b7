"""(b) Train step: ours (`DalleTask(config).train_step`: forward, backward, clip + adamw) vs the same step written
as dalle-mini's tools/train/train.py writes it around its `DalleBart`, same architecture, batch, fp32; with MFU
against the machine's matmul peak measured in the same run (benchmarks/matmul_peak.py).

    .venv/bin/python -m benchmarks.bench_train_step            # config/mini and shapes_tiny, batch 1 and 4
    .venv/bin/python -m benchmarks.bench_train_step --quick    # tiny configs, 16 image tokens, 1 repeat

Both steps are jitted with the train state donated and compiled ahead of time (compile reported separately);
runs are interleaved, median of `--repeats` after a warm-up. config/mini's train state (538.6 M params + adam
moments) is ~6.5 GB per side, so for it the two sides never live together: each of `--repeats` rounds starts ours
(compile, warm-up, one timed step) then dalle-mini (the same), and compile is the median over rounds.
MFU = batch x analytic FLOPs per example (`model.flops_per_example()`, 3x forward matmul FLOPs incl. attention and
lm_head) / step seconds / measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import bench_generation, common, matmul_peak, peers

OPT = dict(name="adamw", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
CLIP = 1.0


def train_config(model_cfg, batch: int):
    from ml_collections import ConfigDict

    from dalle import config as config_lib

    return config_lib.validate(ConfigDict({"model": ConfigDict(model_cfg), "train": ConfigDict(dict(
        batch_size=batch, optimizer=ConfigDict(OPT), grad_clip_norm=CLIP, compute_dtype="float32"))}))


def _our_setup(req: dict):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dalle.modeling import model as model_lib
    from dalle.train.tasks.dalle import DalleTask

    b = req["batch"]
    task = DalleTask(train_config(req["model"], b))
    model = task.model
    params = model_lib.random_params(model, seed=0, scale=0.02)
    state = {"params": params, "opt_state": jax.jit(task.tx.init)(params), "step": jnp.zeros((), jnp.int32)}
    rs = np.random.RandomState(2)
    batch = {"text_tokens": jnp.asarray(rs.randint(1, model.text_vocab_size, (b, model.max_text_length)), jnp.int32),
             "image_tokens": jnp.asarray(rs.randint(0, model.image_vocab_size, (b, model.image_length)), jnp.int32)}
    rng = jax.random.PRNGKey(0)
    t = time.perf_counter()
    compiled = jax.jit(task.train_step, donate_argnums=(0,)).lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def run_once():
        holder["state"], metrics = compiled(holder["state"], batch, rng)
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss}")

    return run_once, {"compile_s": compile_s, "params": model.param_count(params),
                      "flops_per_example": model.flops_per_example(), "jax": jax.__version__}


OUR_WORKER = [sys.executable, "-m", "benchmarks.bench_train_step", "--worker"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configs, 16 image tokens, 1 repeat (smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps per side (default 3, quick 1)")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--configs", default="mini,shapes_tiny")
    p.add_argument("--no-peer", action="store_true", help="time ours only")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from benchmarks import peers as _peers

    _peers.use_results_dir_from_env()
    if args.worker:
        peers.serve(_our_setup)
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    if not args.no_peer:
        peers.ensure_dalle_mini()
    print("train_step: measuring the matmul peak", flush=True)
    peak = matmul_peak.measure(matmul_peak.QUICK_SIZES if args.quick else matmul_peak.SIZES,
                               2 if args.quick else 5)
    peak_flops = peak["peak_gflops"] * 1e9
    print(f"  peak {peak['peak_gflops']:.1f} GFLOP/s fp32 (n={peak['at_size']})", flush=True)
    configs = bench_generation.model_configs(args.quick)
    rows, raw, verdicts = [], [], []
    for name in args.configs.split(","):
        cfg = configs[name]
        for b in (int(x) for x in args.batches.split(",")):
            print(f"train_step: {name} batch {b}", flush=True)
            ours = (OUR_WORKER, dict(batch=b, model=cfg.to_dict()))
            peer = None if args.no_peer else (
                bench_generation.PEER_WORKER,
                dict(task="train", batch=b, config=bench_generation.dalle_mini_kwargs(cfg),
                     optimizer=dict(OPT, grad_clip_norm=CLIP)))
            big = name == "mini"  # (quick runs take this path too, to exercise it)
            res = peers.compare(ours, peer, repeats=repeats, warmup=1, concurrent=not big)
            o, q = res["ours"], res.get("peer")
            flops = b * o["info"]["flops_per_example"]
            mfu_o = flops / o["median"] / peak_flops
            mfu_q = flops / q["median"] / peak_flops if q else None
            rows.append((bench_generation.describe(name, cfg, args.quick), f"{o['info']['params'] / 1e6:.2f} M", b,
                         bench_generation.fmt_s(o["median"]), bench_generation.fmt_s(q["median"]) if q else "-",
                         f"{q['median'] / o['median']:.2f}x" if q else "-",
                         f"{flops / 1e9:.4g}", f"{100 * mfu_o:.1f} %", f"{100 * mfu_q:.1f} %" if q else "-",
                         bench_generation.fmt_s(o["compile_median"]),
                         bench_generation.fmt_s(q["compile_median"]) if q else "-",
                         f"{len(o['runs'])} / {len(q['runs']) if q else 0}"))
            raw.append((name, b, [round(t, 4) for t in o["runs"]], [round(t, 4) for t in q["runs"]] if q else []))
            if name == "mini" and b == max(int(x) for x in args.batches.split(",")):
                x = q["median"] / o["median"] if q else None
                verdicts.append(f"config/mini b{b}: speed-up " + ("-" if x is None else f"{x:.2f}x " + (
                    "(met)" if x >= 1.2 else f"(MISSED: {x / 1.2:.0%} of 1.2x)")) + f", MFU {100 * mfu_o:.1f} % "
                    + ("(met)" if mfu_o >= 0.5 else f"(MISSED: {mfu_o / 0.5:.0%} of 50 %)"))
    text, image = ((bench_generation.QUICK_TEXT, bench_generation.QUICK_IMAGE) if args.quick
                   else (bench_generation.TEXT, bench_generation.IMAGE))
    body = (f"Measured matmul peak: **{peak['peak_gflops']:.1f} GFLOP/s** fp32 (jax, {peak['at_size']}x"
            f"{peak['at_size']} matmul, best of the sizes {', '.join(map(str, peak['per_size']))}; medians "
            + ", ".join(f"{v['median_gflops']:.1f}" for v in peak["per_size"].values()) + " GFLOP/s).\n\n")
    body += common.table(
        ["config", "params", "batch", "ours step", "dalle-mini step", "speed-up", "GFLOP/step", "ours MFU",
         "dalle-mini MFU", "ours compile", "dalle-mini compile", "runs (ours / peer)"], rows)
    body += (f"\n{text} text + {image} image tokens, fp32, random weights, adamw (lr {OPT['lr']:g}) with global-norm "
             f"clipping {CLIP:g} on both sides, no gradient checkpointing, scanned layers on both sides. Ours: "
             f"`DalleTask(config).train_step` (cross-entropy over the image codes); dalle-mini: its `DalleBart.__call__(train=True)` + softmax cross-entropy over its full lm_head "
             f"+ optax, as in its tools/train/train.py (Distributed Shampoo, its default, has no package for "
             f"these jax versions). Goals on config/mini at batch 4: >= 1.2x and >= 50 % MFU.\n")
    if verdicts:
        body += "\nGoals: " + "; ".join(verdicts) + ".\n"
    body += "\nRaw seconds (ours; peer): " + "; ".join(f"{n} b{b}: {o} ; {q}" for n, b, o, q in raw) + "\n"
    cmd = ".venv/bin/python -m benchmarks.bench_train_step" + (" --quick" if args.quick else "")
    common.write_result("train_step", "Train step: ours vs dalle-mini, MFU" + (" (quick smoke run)" if args.quick
                                                                               else ""), cmd, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
