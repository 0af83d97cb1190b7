"""(a) Guided generation of the image tokens: ours (`dalle.modeling.sampling.generate`) vs dalle-mini's
`DalleBart.generate()`, same architecture, same batch, fp32, random weights, condition scale 10, top-k 50.

    .venv/bin/python -m benchmarks.bench_generation            # full: config/mini and shapes_tiny, batch 1 and 8
    .venv/bin/python -m benchmarks.bench_generation --quick    # tiny configs, 16 image tokens, 1 repeat

Configs: dalle-mini `config/mini` (presets.mini(), 538.6 M params) and `shapes_tiny` (the encoder-decoder variant
of configs/shapes_tiny.py: d 128, 2+4 layers, at SHAPES_IMAGE_CODES image codes) at 64 text + 256 image tokens.
Both sides are jitted and compiled ahead of time (dalle-mini's inference notebook jits/pmaps `generate` too);
compile time is reported separately.
Runs are interleaved (ours, peer, ours, ...), median of `--repeats` after a warm-up; dalle-mini's config/mini
generation takes minutes per call, so that peer runs once (no warm-up: it is compiled ahead of time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import common, peers

CONDITION_SCALE = 10.0
TOP_K = 50
# The image vocabulary the shapes_tiny rows of BENCHMARKS.md were measured at: the one-object recipe had 2048
# VQGAN codes then (512 now); the two sides are compared at the same size whatever it is.
SHAPES_IMAGE_CODES = 2048
TEXT, IMAGE = 64, 256
QUICK_TEXT, QUICK_IMAGE = 8, 16
PEER_LIMIT_X = 20.0  # twice the 10x goal: a peer stopped there still proves the goal with margin


# --------------------------------------------------------------------------------------------------------------
# Configs (shared with bench_train_step)
# --------------------------------------------------------------------------------------------------------------
def model_configs(quick: bool) -> dict:
    """name -> our `model` section."""
    from dalle import config as config_lib
    from dalle.modeling import presets

    shapes = config_lib.load_config("configs/shapes_tiny.py:dalle_bart", validate_config=False).model
    shapes.image_vocab_size = SHAPES_IMAGE_CODES
    mini = presets.mini()
    if quick:
        mini.update(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, encoder_vocab_size=1000,
                    image_vocab_size=256)
        for c in (mini, shapes):
            c.max_text_length, c.image_length = QUICK_TEXT, QUICK_IMAGE
    else:
        shapes.max_text_length, shapes.image_length = TEXT, IMAGE
    return {"mini": mini, "shapes_tiny": shapes}


def describe(name: str, cfg, quick: bool) -> str:
    base = {"mini": "config/mini", "shapes_tiny": "shapes_tiny (dalle_bart)"}[name]
    if quick:
        return f"{base} [quick: d {cfg.d_model}, {cfg.encoder_layers}+{cfg.decoder_layers} layers]"
    return base


def dalle_mini_kwargs(cfg) -> dict:
    """Our `model` section -> dalle-mini DalleBartConfig kwargs for the same architecture (inverse of
    dalle.modeling.convert_dalle_mini.model_config_from_dalle_mini)."""
    from dalle.modeling import convert_dalle_mini, model as model_lib

    c = model_lib.complete_config(cfg)
    out = {k: c[k] for k in convert_dalle_mini._COPIED}
    for k, v in out.items():
        if isinstance(v, tuple):
            out[k] = list(v)
    out["activation_function"] = {"smelu_dallemini": "smelu"}.get(c.activation_function, c.activation_function)
    out["image_vocab_size"] = c.image_vocab_size + c.image_extra_tokens
    out["decoder_start_token_id"] = c.image_vocab_size
    out["use_scan"] = bool(c.scan_layers)
    out["gradient_checkpointing"] = bool(c.remat)
    return out


# --------------------------------------------------------------------------------------------------------------
# Our worker
# --------------------------------------------------------------------------------------------------------------
def _our_setup(req: dict):
    import jax
    import numpy as np
    from ml_collections import ConfigDict

    from dalle.modeling import model as model_lib, sampling

    model = model_lib.build_model(ConfigDict(req["model"]))
    params = model_lib.random_params(model, seed=0)
    b = req["batch"]
    text = jax.numpy.asarray(np.random.RandomState(1).randint(1, model.text_vocab_size, (b, model.max_text_length)),
                             jax.numpy.int32)
    scale, top_k = float(req["condition_scale"]), int(req["top_k"])

    def gen(params, text, rng):
        return sampling.generate(model, params, text, rng, num_images=1, condition_scale=scale, top_k=top_k)

    key = jax.random.PRNGKey(req.get("seed", 0))
    t = time.perf_counter()
    compiled = jax.jit(gen, compiler_options=sampling.decode_compiler_options()).lower(params, text, key).compile()
    compile_s = time.perf_counter() - t
    state = {"key": key}

    def run_once():
        state["key"], sub = jax.random.split(state["key"])
        codes = np.asarray(compiled(params, text, sub))
        if codes.shape != (b, model.image_length):
            raise RuntimeError(f"generated {codes.shape}")

    return run_once, {"compile_s": compile_s, "params": model.param_count(params), "jax": jax.__version__}


OUR_WORKER = [sys.executable, "-m", "benchmarks.bench_generation", "--worker"]
PEER_WORKER = [peers.DALLE_MINI_PYTHON, os.path.join(peers.ROOT, "benchmarks", "peer_dalle_mini.py")]


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------
def fmt_s(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny configs, 16 image tokens, 1 repeat (smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 3, quick 1)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--configs", default="mini,shapes_tiny")
    p.add_argument("--no-peer", action="store_true", help="time ours only")
    p.add_argument("--peer-limit-x", type=float, default=PEER_LIMIT_X,
                   help="config/mini: stop dalle-mini's run after this many times ours' median and report the "
                        "elapsed time as a lower bound (0: wait for it)")
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
    configs = model_configs(args.quick)
    lengths = (QUICK_TEXT, QUICK_IMAGE) if args.quick else (TEXT, IMAGE)
    for name in args.configs.split(","):
        if name not in configs:
            raise SystemExit(f"--configs: unknown config {name!r} (known: {', '.join(configs)})")
    for name in args.configs.split(","):
        cfg = configs[name]
        rows, raw, verdicts, stopped = [], [], [], []
        for b in (int(x) for x in args.batches.split(",")):
            print(f"generation: {name} batch {b}", flush=True)
            common_req = dict(op="setup", batch=b, condition_scale=CONDITION_SCALE, top_k=TOP_K, seed=0)
            ours = (OUR_WORKER, dict(common_req, model=cfg.to_dict()))
            peer = None if args.no_peer else (PEER_WORKER, dict(common_req, task="generate",
                                                                 config=dalle_mini_kwargs(cfg)))
            slow_peer = name == "mini"  # minutes per call (a full b1 call took 641 s); quick takes this too
            res = peers.compare(ours, peer, repeats=repeats, warmup=1, peer_repeats=1 if slow_peer else repeats,
                                peer_warmup=0 if slow_peer and not args.quick else 1, concurrent=True,
                                peer_limit_x=(args.peer_limit_x or None) if slow_peer and not args.quick else None)
            o, q = res["ours"], res.get("peer")
            peer_s, bound = (q["median"], "") if q and q["median"] is not None else (None, "")
            if q and peer_s is None and "stopped_after" in q:
                peer_s, bound = q["stopped_after"], "> "
                stopped.append(f"b{b} after {peer_s:.0f} s")
            ratio = f"{bound}{peer_s / o['median']:.1f}x" if peer_s else "-"
            per_tok = o["median"] / lengths[1]
            rows.append((describe(name, cfg, args.quick), f"{o['info']['params'] / 1e6:.2f} M", b,
                         fmt_s(o["median"]), bound + fmt_s(peer_s) if peer_s else "-", ratio,
                         f"{1e3 * per_tok:.1f} ms", f"{b * lengths[1] / o['median']:.0f}",
                         fmt_s(o["compile_median"]), fmt_s(q["compile_median"]) if q else "-",
                         f"{len(o['runs'])} / {len(q['runs']) if q else 0}"))
            raw.append((name, b, [round(t, 4) for t in o["runs"]], [round(t, 4) for t in q["runs"]] if q else []))
            if peer_s:
                x = peer_s / o["median"]
                verdicts.append(f"{name} b{b}: {bound}{x:.1f}x " + (
                    "(met)" if x >= 10 else ("(not proven: the peer was stopped first)" if bound else
                                             f"(MISSED: {x / 10:.0%} of the goal)")))
        _write(name, cfg, args, rows, raw, verdicts, stopped, lengths, res)
    return 0


def _write(name, cfg, args, rows, raw, verdicts, stopped, lengths, res) -> None:
    """One result file per config (`results/generation_<config>.md`), so runs of one config keep the other's."""
    body = common.table(
        ["config", "params", "batch", "ours", "dalle-mini", "speed-up", "ours per token step", "ours tokens/s",
         "ours compile", "dalle-mini compile", "runs (ours / peer)"], rows)
    body += (f"\nGuided generation of {lengths[1]} image tokens from {lengths[0]} text tokens (condition scale "
             f"{CONDITION_SCALE:g}: both run the conditional and the unconditional branch every step), top-k {TOP_K}, "
             f"fp32, random weights, one image per prompt. Seconds per call are medians of interleaved runs after "
             f"ahead-of-time compilation and a warm-up call (dalle-mini's config/mini: one run, minutes each). "
             f"dalle-mini 0.1.5 runs `DalleBart.generate(do_sample=True, condition_scale=..., top_k=...)` under "
             f"`jax.jit` in its own venv (jax 0.4.13); ours runs `dalle.modeling.sampling.generate` (jax "
             f"{res['ours']['info'].get('jax', '?')}). Goal: >= 10x.\n")
    if stopped:
        body += (f"\nA `>` marks a lower bound: dalle-mini's single run was stopped once it had taken "
                 f"{args.peer_limit_x:g}x ours' median ({', '.join(stopped)}; one complete batch-1 call took 641 s "
                 f"when run to the end once on this kind of machine), which proves the goal without waiting for it.\n")
    if verdicts:
        body += "\nGoal >= 10x faster than dalle-mini: " + "; ".join(verdicts) + ".\n"
    body += "\nRaw seconds (ours; peer): " + "; ".join(f"{n} b{b}: {o} ; {q}" for n, b, o, q in raw) + "\n"
    cmd = (f".venv/bin/python -m benchmarks.bench_generation --configs {name} --batches {args.batches}"
           + (f" --repeats {args.repeats}" if args.repeats else "") + (" --quick" if args.quick else "")
           + (" --no-peer" if args.no_peer else "")
           + (f" --peer-limit-x {args.peer_limit_x:g}" if args.peer_limit_x != PEER_LIMIT_X else ""))
    common.write_result(f"generation_{name}", f"Generation on {describe(name, cfg, args.quick)}: ours vs dalle-mini"
                        + (" (quick smoke run)" if args.quick else ""), cmd, body)


if __name__ == "__main__":
    sys.exit(main())
