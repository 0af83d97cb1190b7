"""dalle-mini 0.1.5 side of the generation and train-step benchmarks: a worker (benchmarks/peers.py protocol) run by
the peer venv's python, never by ours:

    .venv-dallemini/bin/python benchmarks/peer_dalle_mini.py     # reads JSON requests on stdin

setup requests:
  {"op": "setup", "task": "generate", "config": {DalleBartConfig kwargs}, "batch": B, "condition_scale": s,
   "top_k": k, "seed": 0}
      dalle-mini's own `DalleBart.generate(do_sample=True, condition_scale=s, top_k=k, input_ids_uncond=...)`,
      jitted as its inference notebook does (`p_generate`, here `jax.jit` on one device) and compiled ahead of time.
  {"op": "setup", "task": "train", "config": {...}, "batch": B, "optimizer": {lr, b1, b2, eps, weight_decay,
   grad_clip_norm}}
      a train step written as dalle-mini's tools/train/train.py writes it: `apply_fn(**batch, params, dropout_rng,
      train=True)`, softmax cross-entropy over its full lm_head, `value_and_grad`, optax clip + adamw with decay on
      kernels only; jitted with the state donated.
Weights are random (the speed does not depend on them), float32.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

# dalle-mini's src/dalle_mini/model/partitions.py imports the pre-0.4 name.
jax.experimental.PartitionSpec = jax.sharding.PartitionSpec

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import peers  # noqa: E402


def _model(kwargs: dict):
    from dalle_mini.model import DalleBart, DalleBartConfig

    config = DalleBartConfig(**kwargs)
    model = DalleBart(config, input_shape=(1, config.max_text_length), seed=0, dtype=jnp.float32, _do_init=False)
    rs = np.random.RandomState(0)
    std = config.init_std

    def leaf(path, s):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if name.endswith("scale"):
            return jnp.ones(s.shape, s.dtype)
        if name.endswith("bias"):
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(rs.standard_normal(s.shape).astype(np.float32) * std)

    from flax.core import unfreeze

    params = jax.tree_util.tree_map_with_path(leaf, unfreeze(model.params_shape_tree))
    return config, model, params


def _text(config, batch: int, rs):
    """BART ids (<s>=0 <pad>=1 </s>=2): full-length random captions and the empty caption for guidance."""
    lt = config.max_text_length
    ids = np.concatenate([np.zeros((batch, 1)), rs.randint(4, config.encoder_vocab_size, (batch, lt - 2)),
                          np.full((batch, 1), 2)], axis=1).astype(np.int32)
    mask = np.ones((batch, lt), np.int32)
    uncond = np.ones((batch, lt), np.int32)
    uncond[:, 0], uncond[:, 1] = 0, 2
    uncond_mask = np.zeros((batch, lt), np.int32)
    uncond_mask[:, :2] = 1
    return ids, mask, uncond, uncond_mask


def _num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def setup_generate(req: dict):
    config, model, params = _model(req["config"])
    batch = req["batch"]
    ids, mask, uncond, uncond_mask = map(jnp.asarray, _text(config, batch, np.random.RandomState(1)))
    scale, top_k = float(req["condition_scale"]), int(req["top_k"])

    def generate(params, ids, mask, uncond, uncond_mask, key):
        return model.generate(input_ids=ids, attention_mask=mask, prng_key=key, params=params, do_sample=True,
                              top_k=top_k, condition_scale=scale, input_ids_uncond=uncond,
                              attention_mask_uncond=uncond_mask).sequences

    key = jax.random.PRNGKey(req.get("seed", 0))
    t = time.perf_counter()
    compiled = jax.jit(generate).lower(params, ids, mask, uncond, uncond_mask, key).compile()
    compile_s = time.perf_counter() - t
    state = {"key": key}

    def run_once():
        state["key"], sub = jax.random.split(state["key"])
        seq = compiled(params, ids, mask, uncond, uncond_mask, sub)
        seq = np.asarray(jax.device_get(seq))
        n = seq.shape[1] - 1
        if n != config.image_length:
            raise RuntimeError(f"dalle-mini generated {n} tokens, expected {config.image_length}")

    return run_once, {"compile_s": compile_s, "params": _num_params(params), "jax": jax.__version__,
                      "devices": jax.device_count()}


def setup_train(req: dict):
    import optax
    from flax.traverse_util import flatten_dict, unflatten_dict

    config, model, params = _model(req["config"])
    batch = req["batch"]
    rs = np.random.RandomState(2)
    ids, mask, _, _ = _text(config, batch, rs)
    codes = config.decoder_start_token_id
    labels = rs.randint(0, codes, (batch, config.image_length)).astype(np.int32)
    decoder_input_ids = np.concatenate([np.full((batch, 1), codes, np.int32), labels[:, :-1]], axis=1)
    data = {k: jnp.asarray(v) for k, v in dict(input_ids=ids, attention_mask=mask,
                                                  decoder_input_ids=decoder_input_ids, labels=labels).items()}
    o = req["optimizer"]

    def decay_mask(p):  # dalle-mini's train.py: no decay on biases and norms
        flat = flatten_dict(p)
        return unflatten_dict({k: (k[-1] != "bias" and "layernorm" not in "/".join(k).lower()
                                   and "LayerNorm" not in "/".join(k) and k[-1] != "scale") for k in flat})

    tx = optax.adamw(o["lr"], b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"], mask=decay_mask)
    if o.get("grad_clip_norm"):
        tx = optax.chain(optax.clip_by_global_norm(o["grad_clip_norm"]), tx)
    vocab = config.image_vocab_size + 1

    def loss_fn(params, batch, rng):
        b = dict(batch)
        labels = b.pop("labels")
        logits = model(**b, params=params, dropout_rng=rng, train=True)[0]
        return optax.softmax_cross_entropy(logits, jax.nn.one_hot(labels, vocab)).mean()

    def train_step(state, batch, rng):
        rng, dropout_rng = jax.random.split(rng)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, dropout_rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                "step": state["step"] + 1}, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    rng = jax.random.PRNGKey(0)
    t = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0,)).lower(state, data, rng).compile()
    compile_s = time.perf_counter() - t
    holder = {"state": state}

    def run_once():
        holder["state"], metrics = compiled(holder["state"], data, rng)
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss}")

    return run_once, {"compile_s": compile_s, "params": _num_params(params), "jax": jax.__version__}


def setup(req: dict):
    task = req["task"]
    if task == "generate":
        return setup_generate(req)
    if task == "train":
        return setup_train(req)
    raise ValueError(f"unknown task {task!r}")


if __name__ == "__main__":
    peers.serve(setup)
