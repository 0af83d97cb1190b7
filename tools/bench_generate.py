"""Time `dalle.modeling.sampling.generate` on random weights (no checkpoint needed).

    .venv/bin/python tools/bench_generate.py --preset tiny --reps 3
    .venv/bin/python tools/bench_generate.py --preset mini --reps 1 --scales 1,10

Reference (dalle-mini 0.1.5 in its own venv on this 2-core CPU, fp32, measured once; benchmarks/bench_generation.py
times both side by side, BENCHMARKS.md): tiny 1.05 s per image (2.06 s with
condition_scale 10); config/mini 365 s (1.43 s/token), 641 s with condition_scale 10. The first call includes
compilation; later calls with other seeds or float knobs reuse it.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dalle.modeling import model as model_lib
from dalle.modeling import presets, sampling


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="a function of dalle/modeling/presets.py")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scales", default="1,10", help="condition scales to time")
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--scan", action="store_true", help="decode with the layer scan (unroll_layers=False)")
    args = parser.parse_args(argv)
    model = model_lib.build_model(getattr(presets, args.preset)())
    params = model_lib.random_params(model, scale=0.02)
    rs = np.random.RandomState(0)
    text = rs.randint(1, model.text_vocab_size, (args.batch, model.max_text_length))
    text[:, 20:] = 0
    text = jnp.asarray(text, jnp.int32)
    print(f"{args.preset}: {model.param_count(params):,} params, batch {args.batch}, {model.image_length} tokens")
    for scale in (float(s) for s in args.scales.split(",")):
        kw = dict(top_k=args.top_k, condition_scale=scale, unroll_layers=not args.scan)
        start = time.time()
        sampling.generate(model, params, text, jax.random.PRNGKey(0), **kw).block_until_ready()
        first = time.time() - start
        times = []
        for i in range(args.reps):
            start = time.time()
            sampling.generate(model, params, text, jax.random.PRNGKey(i + 1), **kw).block_until_ready()
            times.append(time.time() - start)
        best = min(times)
        print(f"  condition_scale {scale:g}: first call {first:.2f} s (with compile), best {best:.3f} s "
              f"= {1000 * best / model.image_length:.2f} ms/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
