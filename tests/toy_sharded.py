"""A tiny Haiku transformer and a sharded train loop shared by the sharding and multi-host tests."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dalle import sharding

D, HEADS, KEY, MLP, LAYERS = 32, 4, 8, 64, 2

PARAM_RULES = (
    (r"attn/(query|key|value)/w$", ("embed", "heads")),
    (r"attn/(query|key|value)/b$", ("heads",)),
    (r"attn/linear/w$", ("heads", "embed")),
    (r"attn/linear/b$", ("embed",)),
    (r"mlp_in/w$", ("embed", "mlp")),
    (r"mlp_in/b$", ("mlp",)),
    (r"mlp_out/w$", ("mlp", "embed")),
    (r"mlp_out/b$", ("embed",)),
    (r"ln/(scale|offset)$", ("norm",)),
    (r"head/w$", ("embed", "vocab")),
    (r"head/b$", ("vocab",)),
)


def _forward(x):
    def block(h):
        y = hk.LayerNorm(-1, True, True, name="ln")(h)
        y = hk.MultiHeadAttention(HEADS, KEY, model_size=D, w_init=hk.initializers.VarianceScaling(1.0), name="attn")(
            y, y, y
        )
        h = sharding.constrain(h + y, ("batch", "length", "embed"))
        y = jax.nn.gelu(hk.Linear(MLP, name="mlp_in")(h))
        y = sharding.constrain(y, ("batch", "length", "mlp"))
        return h + hk.Linear(D, name="mlp_out")(y)

    x = hk.layer_stack(LAYERS)(block)(x)
    return hk.Linear(16, name="head")(x)


model = hk.without_apply_rng(hk.transform(_forward))


def data(seed: int = 0, batch: int = 8, length: int = 6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, length, D)).astype(np.float32)
    y = rng.integers(0, 16, size=(batch, length)).astype(np.int32)
    return x, y


def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train(mesh, steps: int = 3, x=None, y=None, global_batch: bool = True):
    """Trains `steps` SGD steps with params/opt state sharded by PARAM_RULES on `mesh`.

    `x`, `y` are this process's rows; returns (host params, param shardings)."""
    if x is None:
        x, y = data()
    # SGD, not Adam: Adam divides tiny gradients by their own size, so float-rounding noise would dominate.
    opt = optax.sgd(0.1, momentum=0.9)
    rules = sharding.DEFAULT_LOGICAL_RULES
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 6, D)))
    p_sh = sharding.param_shardings(abstract, PARAM_RULES, rules, mesh)
    o_sh = sharding.derived_state_shardings(jax.eval_shape(opt.init, abstract), abstract, p_sh, mesh)
    with sharding.use_mesh(mesh, rules):
        params = jax.jit(lambda k: model.init(k, jnp.zeros((1, 6, D))), out_shardings=p_sh)(jax.random.PRNGKey(0))
        opt_state = jax.jit(opt.init, out_shardings=o_sh)(params)
        xs, ys = sharding.host_to_global((x, y), mesh, rules)
        batch_sh = (xs.sharding, ys.sharding)

        def step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        step = jax.jit(step, in_shardings=(p_sh, o_sh) + batch_sh, out_shardings=(p_sh, o_sh, None),
                       donate_argnums=(0, 1))
        for _ in range(steps):
            params, opt_state, _ = step(params, opt_state, xs, ys)
        host = sharding.gather_to_host(params)
    return host, p_sh, params
