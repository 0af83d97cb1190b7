"""dVAE training (DALL·E's recipe, "Zero-Shot Text-to-Image Generation" section 2.1) as a `Task` of the one train
loop: `model.kind = "dvae"`.

One step: encoder logits of map_pixels'd images, a Gumbel-softmax sample at temperature tau (or its straight-through
one-hot), the decoder's statistics of it, and the beta-weighted negative ELB with a logit-Laplace (the paper's) or
Gaussian (`dvae_loss.reconstruction = "mse"`) reconstruction term (dalle/modeling/dvae/losses.py); tau and beta
follow the `dvae_loss` schedules by step. State is the default {"params", "opt_state", "step"}, plus "usage" (an
EMA of each code's share of the argmax codes) with `dvae_loss.restart_dead_codes`. The `dvae_loss` options
against codebook collapse (straight-through samples, an MSE term, foreground weighting, a k-means seeding of the
logits, a decoder-only warm-up, dead-code restarts) all default to the paper's recipe. Batches are
{"image": uint8 [B, H, W, 3]} (float in [0, 1] also accepted) from any registered data source, read as the VQGAN
task reads them (dalle.data.image_batches).

    dalle train --config configs/dvae_shapes.py --workdir outputs/dvae_shapes
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from dalle import precision, registry, sharding
from dalle.modeling.dvae import losses
from dalle.modeling.dvae import model as dvae_lib
from dalle.modeling.vqgan.losses import code_stats, foreground_weights, kmeans_plus_plus
from dalle.train import optim
from dalle.train.task import Batch, DataIterator, Metrics, State, Task
from dalle.train.tasks.vqgan import image_grid


def images_to_unit_range(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def psnr(x: jax.Array, recon: jax.Array) -> jax.Array:
    """Mean per-image PSNR in dB of images in [0, 1]."""
    mse = jnp.mean(jnp.square(x.astype(jnp.float32) - recon.astype(jnp.float32)), axis=tuple(range(1, x.ndim)))
    return jnp.mean(10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10)))


@registry.TASKS.register("dvae")
class DVAETask(Task):
    """Encoder and decoder trained together on the relaxed ELB with `train.optimizer`."""

    def __init__(self, config: ConfigDict, train_iterator_fn=None):
        super().__init__(config)
        self.cfg = dvae_lib.DVAEConfig.from_config(config)
        self.lc = _loss_defaults()
        self.lc.update(config.get("dvae_loss") or {})
        dtype = precision.jnp_dtype(config.train.compute_dtype) if "train" in config else jnp.float32
        self.model = dvae_lib.DVAE(self.cfg, dtype)
        abstract = jax.eval_shape(self.model.init, jax.random.key(0))
        self.tx = optim.make_optimizer(config.train, abstract)
        self.image_size = int(config.data.image_size) if "data" in config else self.cfg.resolution
        self._train_iterator_fn = train_iterator_fn  # (process_index, process_count) -> DataIterator (tests)
        self._summary_images: np.ndarray | None = None
        self._recon_fn = None

    # --- state (the default {"params", "opt_state", "step"} of dalle.train.task) ------------------------------
    def init_params(self, rng: jax.Array) -> Any:
        return self.model.init(rng)

    def init_state(self, rng: jax.Array) -> State:
        state = super().init_state(rng)
        if self.lc.restart_dead_codes:
            n = self.cfg.vocab_size
            state["usage"] = jnp.full((n,), 1.0 / n, jnp.float32)
        return state

    def state_shardings(self, abstract_state: State, mesh: Mesh) -> Any:
        out = super().state_shardings({k: v for k, v in abstract_state.items() if k != "usage"}, mesh)
        if "usage" in abstract_state:
            out["usage"] = sharding.replicated(mesh)
        return out

    def partition_rules(self) -> sharding.ParamRules:
        return sharding.get_partition_rules("dvae")

    # --- schedules --------------------------------------------------------------------------------------------
    def temperature(self, step: jax.Array) -> jax.Array:
        lc = self.lc
        return losses.schedule(step, lc.temperature_start, lc.temperature_end, lc.temperature_steps,
                               lc.temperature_shape)

    def kl_weight(self, step: jax.Array) -> jax.Array:
        lc = self.lc
        return losses.schedule(step, lc.kl_weight_start, lc.kl_weight_end, lc.kl_weight_steps, lc.kl_weight_shape)

    # --- losses -----------------------------------------------------------------------------------------------
    def loss(self, params: Any, images: jax.Array, rng: jax.Array, temperature: jax.Array,
             kl_weight: jax.Array) -> tuple[jax.Array, dict]:
        """The negative ELB per pixel value of images in [0, 1] under the relaxed (or straight-through) sample and
        the configured reconstruction term, and its parts."""
        x = dvae_lib.map_pixels(images)
        features, logits = self.model.encoder_features_and_logits(params, x)
        z = losses.gumbel_softmax(rng, logits, temperature)
        if self.lc.straight_through:
            z = losses.straight_through(z)
        stats = self.model.decoder_stats(params, z)
        weights = self.pixel_weights(images)
        loss, nll, kl = losses.negative_elb(x, stats, logits, kl_weight, weights, self.lc.reconstruction,
                                            float(self.lc.mse_sigma))
        return loss, {"logits": logits, "features": features, "nll": nll, "kl": kl}

    def reconstruction_nll(self, x: jax.Array, stats: jax.Array) -> jax.Array:
        """The configured reconstruction term per pixel value of mapped pixels x (what `hard_nll` reports)."""
        return losses.reconstruction_nll(x, stats, self.lc.reconstruction, float(self.lc.mse_sigma))

    def pixel_weights(self, images: jax.Array) -> jax.Array | None:
        """Per-pixel NLL weights [B, H, W, 1] of images in [0, 1] (None without `foreground_weight`): the VQGAN
        task's, 1 on each image's background colour up to 1 + foreground_weight on pixels that stand out."""
        if not self.lc.foreground_weight:
            return None
        return foreground_weights(2.0 * images - 1.0, float(self.lc.foreground_weight))

    def _hard_metrics(self, params: Any, images: jax.Array, logits: jax.Array
                      ) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
        """What the tokenizer will do: argmax codes, their decoded images' PSNR and NLL, and code usage. Also
        returns the codes [B, h, w] and each code position's squared reconstruction error [B, h, w]."""
        codes = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
        stats = self.model.decoder_stats(params, codes)
        recon = dvae_lib.stats_to_images(stats, self.cfg.output_channels)
        _, used, perplexity = code_stats(codes, self.cfg.vocab_size)
        b, h, w = codes.shape
        f = self.cfg.downsample_factor
        err = jnp.sum(jnp.square(recon - images).reshape(b, h, f, w, f, -1), axis=(2, 4, 5))
        return ({"psnr": psnr(images, recon), "hard_nll": jnp.mean(self.reconstruction_nll(
                    dvae_lib.map_pixels(images), stats)),
                 "codebook_usage": used, "perplexity": perplexity}, codes, err)

    def kmeans_init(self, params: Any, features: jax.Array, rng: jax.Array) -> Any:
        """params with the encoder's output conv set so that each position's argmax code is its nearest of
        vocab_size k-means++ seeds c drawn from `features` (the batch's encoder features [B, h, w, C]):
        logit_v(f) = s * (f . c_v - |c_v|^2 / 2) = -s |f - c_v|^2 / 2 + (terms equal for every code), with
        s = kmeans_logit_scale / (the features' variance about their mean). The VQGAN task seeds its codebook the
        same way: rare object features get codes of their own, and the codes mean something from the first step."""
        f = jax.lax.stop_gradient(features).reshape(-1, features.shape[-1]).astype(jnp.float32)
        seeds = kmeans_plus_plus(f, self.cfg.vocab_size, rng)  # [K, C]
        var = jnp.mean(jnp.sum(jnp.square(f - jnp.mean(f, axis=0)), axis=-1))
        s = float(self.lc.kmeans_logit_scale) / jnp.maximum(var, 1e-12)
        enc = params["encoder/output/conv"]
        w = (s * seeds.T)[None, None].astype(enc["w"].dtype)
        b = (-0.5 * s * jnp.sum(jnp.square(seeds), axis=-1)).astype(enc["b"].dtype)
        return {**params, "encoder/output/conv": {**enc, "w": w, "b": b}}

    def restart_dead_codes(self, params: Any, usage: jax.Array, codes: jax.Array, err: jax.Array,
                           restart: jax.Array, rng: jax.Array, features: jax.Array) -> tuple[Any, jax.Array]:
        """(params, usage) with every code where `restart` [vocab] holds re-initialised from a live code u: the
        code at a position of this batch drawn in proportion to `err` (the positions the model reconstructs
        worst: objects on these images, not the background). The restarted code splits u's inputs: its decoder
        input row is u's plus noise, and its encoder output column and bias are u's moved so that

            logit_new(f') - logit_u(f') = restart_margin * ((f' - c) . (f - c) / |f - c| ** 2 - 1/1000)

        for encoder `features` f' (f: the drawn position's, c: the centroid of u's positions in the batch): it
        wins by about the margin at f and on that side of c (u keeps the level ones), and the gradient then pulls
        the two codes apart. Where f is at c (no direction to split along) d is a random direction of the
        features' spread: the restarted code then loses at f by the tie margin and wins on one side of c."""
        n = self.cfg.vocab_size
        k_pos, k_dec, k_dir = jax.random.split(rng, 3)
        flat = codes.reshape(-1)
        # Drawn independently (with replacement): the error sits on few positions (the objects), and distinct
        # draws would send most restarts to the background, where a split has nothing to separate.
        pos = jax.random.categorical(k_pos, jnp.log(err.reshape(-1) + 1e-12), shape=(n,))
        src = flat[pos]
        enc, dec = params["encoder/output/conv"], params["decoder/input"]
        feats = jax.lax.stop_gradient(features).reshape(-1, features.shape[-1]).astype(jnp.float32)
        sums = jnp.zeros((n, feats.shape[-1]), jnp.float32).at[flat].add(feats)
        centroid = sums / jnp.maximum(jnp.zeros((n,), jnp.float32).at[flat].add(1.0), 1.0)[:, None]
        d = feats[pos] - centroid[src]  # [n, C]
        # A position at (or next to) its code's centroid, e.g. a code whose positions all share one feature vector
        # (flat background): no direction splits them, so a random one of the features' scale is used, and the
        # restarted code then wins only on its side of the centroid rather than tying with u everywhere.
        # (the features' spread, floored by a thousandth of their mean square: all-equal features have none)
        scale = (jnp.mean(jnp.sum(jnp.square(feats - jnp.mean(feats, axis=0)), -1))
                 + 1e-3 * jnp.mean(jnp.sum(jnp.square(feats), -1)) + 1e-12)
        degenerate = jnp.sum(jnp.square(d), -1) < 1e-6 * scale
        rand = jax.random.normal(k_dir, d.shape, jnp.float32) * jnp.sqrt(scale / d.shape[-1])
        d = jnp.where(degenerate[:, None], rand, d)
        d2 = jnp.sum(jnp.square(d), -1)
        step = float(self.lc.restart_margin) * d / d2[:, None]
        enc_w = enc["w"][..., src] + step.T[None, None].astype(enc["w"].dtype)
        tie = 1e-3 * float(self.lc.restart_margin)  # where the two are level, u keeps its positions
        enc_b = enc["b"][src] - (jnp.sum(step * centroid[src], -1) + tie).astype(enc["b"].dtype)
        dec_w = dec["w"][:, :, src, :]
        noise = float(self.lc.restart_noise) * jnp.std(dec["w"])
        dec_w = dec_w + noise * jax.random.normal(k_dec, dec_w.shape, dec_w.dtype)
        params = dict(params)
        params["encoder/output/conv"] = {**enc, "w": jnp.where(restart, enc_w, enc["w"]),
                                         "b": jnp.where(restart, enc_b, enc["b"])}
        params["decoder/input"] = {**dec, "w": jnp.where(restart[:, None], dec_w, dec["w"])}
        return params, jnp.where(restart, 1.0 / n, usage)

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        images = sharding.constrain(images_to_unit_range(batch["image"]), ("batch", None, None, None))
        step = state["step"]
        tau, beta = self.temperature(step), self.kl_weight(step)
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state["params"], images, rng, tau, beta)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        if self.lc.encoder_freeze_steps:
            # The decoder first learns the codes the initial encoder hands it; the encoder's gradients before
            # then chase the decoder's image-wide error (one code that fixes it everywhere) and collapse. The
            # encoder's updates are zeroed, not its gradients: the optimizer's moments keep up (no oversized first
            # steps after the freeze) and no weight decay moves it. (The k-means seeding and dead-code restarts
            # still write its output conv.)
            on = (step >= self.lc.encoder_freeze_steps).astype(jnp.float32)
            updates = {k: (jax.tree_util.tree_map(lambda u: u * on.astype(u.dtype), v) if k.startswith("encoder/")
                           else v) for k, v in updates.items()}
        params = optax.apply_updates(state["params"], updates)
        hard, codes, err = self._hard_metrics(state["params"], images, aux["logits"])
        metrics = {"loss": loss, "nll": aux["nll"], "kl": aux["kl"], "temperature": tau, "kl_weight": beta,
                   "grad_norm": optax.tree.norm(grads), **hard}
        if self.lc.kmeans_init:
            seed = lambda p: self.kmeans_init(p, aux["features"], jax.random.fold_in(rng, 2))  # noqa: E731
            params = jax.lax.cond(step == 0, seed, lambda p: p, params)
        new_state = {"params": params, "opt_state": opt_state, "step": step + 1}
        if "usage" in state:
            lc, n = self.lc, self.cfg.vocab_size
            counts, _, _ = code_stats(codes, n)
            usage = lc.usage_decay * state["usage"] + (1 - lc.usage_decay) * counts / jnp.sum(counts)
            dead = usage * n < lc.dead_code_threshold
            on = (step + 1) % lc.restart_every == 0
            if lc.restart_until:
                on = jnp.logical_and(on, step + 1 < lc.restart_until)
            restart = jnp.logical_and(dead, on)
            params, usage = self.restart_dead_codes(params, usage, codes, err, restart,
                                                    jax.random.fold_in(rng, 1), aux["features"])
            new_state.update(params=params, usage=usage)
            metrics.update(dead_codes=jnp.sum(dead.astype(jnp.float32)),
                           restarted_codes=jnp.sum(restart.astype(jnp.float32)))
        return new_state, metrics

    def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
        images = images_to_unit_range(batch["image"])
        logits = self.model.encoder_logits(state["params"], dvae_lib.map_pixels(images))
        kl = jnp.mean(losses.kl_to_uniform(logits))
        return {"kl": kl, **self._hard_metrics(state["params"], images, logits)[0]}

    # --- data -------------------------------------------------------------------------------------------------
    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        if self._train_iterator_fn is not None:
            return self._train_iterator_fn(process_index, process_count)
        from dalle.data.image_batches import image_batches

        return image_batches(self.config.data, "train", int(self.config.train.batch_size), process_index,
                             process_count)

    def eval_data(self, process_index: int, process_count: int) -> Iterator[Batch] | None:
        if self._train_iterator_fn is not None or "data" not in self.config:
            return None
        from dalle.data.image_batches import validation_batches

        return validation_batches(self.config.data, int(self.config.train.batch_size), process_index, process_count)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        s = self.image_size
        return {"image": jax.ShapeDtypeStruct((batch_size, s, s, self.cfg.input_channels), jnp.uint8)}

    # --- reporting --------------------------------------------------------------------------------------------
    def summaries(self, state: State, step: int) -> dict[str, np.ndarray]:
        """Originals (top row) over their argmax-code reconstructions (bottom row) of fixed training images."""
        n = int(self.lc.summary_images)
        if n == 0:
            return {}
        if self._summary_images is None:
            self._summary_images = np.asarray(next(self.train_data(0, 1))["image"])[:n]
        if self._recon_fn is None:
            def recon(params, images):
                x = images_to_unit_range(images)
                return self.model.decode_codes(params, self.model.encode(params, x))

            self._recon_fn = jax.jit(recon)
        images = self._summary_images
        out = np.asarray(jax.device_get(self._recon_fn(state["params"], images)))
        out = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        orig = images if images.dtype == np.uint8 else np.clip(images * 255 + 0.5, 0, 255).astype(np.uint8)
        return {"reconstructions": image_grid(np.stack([orig, out]))[None]}

    def export_params(self, state: State) -> tuple[Any, ConfigDict]:
        config = ConfigDict({"name": self.config.get("name", "dvae"), "model": self.config.model.to_dict(),
                             "mesh": {"logical_rules": sharding.config_logical_rules(self.config)}})
        return state["params"], config


def _loss_defaults() -> ConfigDict:
    from dalle.modeling.dvae import schema

    return schema.loss_defaults()
