"""VQGAN training (taming's recipe) as a `Task` of the one train loop.

State: {"step", "gen_params", "disc_params", "gen_opt", "disc_opt", "usage"} plus {"ema"} with EMA codebook
updates. One `train_step` = one generator update then one discriminator update on the same batch, like taming's
two Lightning optimizers, except that the discriminator sees the reconstruction from before the generator update
(saves a second forward pass). Before `vqgan_loss.disc_start` the GAN terms are skipped, not computed and
zeroed. Batches are {"image": uint8 [B, H, W, 3]} (float in [0, 1] also accepted), as dalle.data.shapes yields.
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
from dalle.modeling.vqgan import model as vqgan_lib
from dalle.modeling.vqgan import losses
from dalle.train.task import Batch, DataIterator, Metrics, State, Task


def make_optimizer(train: ConfigDict, lr_scale: float = 1.0) -> optax.GradientTransformation:
    """The project's optimizer from `train` (dalle.train.optim), with the learning rate scaled."""
    from dalle.train import optim

    if lr_scale != 1.0:
        train = ConfigDict(train.to_dict())
        train.optimizer.lr = train.optimizer.lr * lr_scale
    return optim.make_base_optimizer(train)


def images_to_model_range(images: jax.Array) -> jax.Array:
    """uint8 [0, 255] or float [0, 1] -> float32 [-1, 1]."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images.astype(jnp.float32) * 2.0 - 1.0


class ArrayImageIterator(DataIterator):
    """Deterministic batches from an in-memory uint8 image array (tests, tiny experiments): reshuffled every
    epoch from `seed`, position saved exactly. Each process reads its own slice of every global batch."""

    def __init__(self, images: np.ndarray, batch_size: int, seed: int = 0, process_index: int = 0,
                 process_count: int = 1):
        if batch_size % process_count or batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} must split over {process_count} processes and fit in "
                             f"{len(images)} images")
        self.images, self.batch_size, self.seed = np.asarray(images), batch_size, seed
        self.local = batch_size // process_count
        self.offset = process_index * self.local
        self.epoch, self.index = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))

    def __next__(self) -> Batch:
        if self.index + self.batch_size > len(self.images):
            self.epoch, self.index = self.epoch + 1, 0
        rows = self._order()[self.index + self.offset:self.index + self.offset + self.local]
        self.index += self.batch_size
        return {"image": self.images[rows]}

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def set_state(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"data state seed {state['seed']} != this iterator's {self.seed}")
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


@registry.TASKS.register("vqgan")
class VQGANTask(Task):
    """Generator (VQGAN) + PatchGAN discriminator, both optimized with `train.optimizer` (the discriminator's
    lr scaled by `vqgan_loss.disc_lr_scale`)."""

    def __init__(self, config: ConfigDict, train_iterator_fn=None):
        super().__init__(config)
        self.cfg = vqgan_lib.VQGANConfig.from_config(config)
        self.lc = config.get("vqgan_loss") or _loss_defaults()
        dtype = precision.jnp_dtype(config.train.compute_dtype) if "train" in config else jnp.float32
        self.model = vqgan_lib.VQGAN(self.cfg, dtype)
        self.disc = losses.make_discriminator(self.lc.disc_ndf, self.lc.disc_num_layers)
        self.gen_tx = make_optimizer(config.train)
        self.disc_tx = make_optimizer(config.train, self.lc.disc_lr_scale)
        self.d_loss_fn = losses.D_LOSSES[self.lc.disc_loss]
        self.perceptual = (losses.load_perceptual_net(self.lc.perceptual_net)
                           if self.lc.perceptual_weight > 0 else None)
        self.image_size = int(config.data.image_size) if "data" in config else self.cfg.resolution
        self._train_iterator_fn = train_iterator_fn  # (process_index, process_count) -> DataIterator
        self._summary_images: np.ndarray | None = None
        self._recon_fn = None

    # --- state ------------------------------------------------------------------------------------------------
    def init_state(self, rng: jax.Array) -> State:
        k_gen, k_disc = jax.random.split(rng)
        gen = self.model.init(k_gen)
        x = jnp.zeros((1, self.image_size, self.image_size, self.cfg.out_ch), jnp.float32)
        disc = self.disc.init(k_disc, x)
        n = self.cfg.n_embed
        state = {
            "step": jnp.zeros((), jnp.int32),
            "gen_params": gen,
            "disc_params": disc,
            "gen_opt": self.gen_tx.init(gen),
            "disc_opt": self.disc_tx.init(disc),
            "usage": jnp.full((n,), 1.0 / n, jnp.float32),  # EMA of each code's share of tokens
        }
        if self.lc.use_ema:
            state["ema"] = {"cluster_size": jnp.ones((n,), jnp.float32),
                            "embed_sum": gen["quantize"]["embeddings"].astype(jnp.float32)}
        return state

    def partition_rules(self) -> sharding.ParamRules:
        return sharding.get_partition_rules("vqgan")  # generator and discriminator alike

    def state_shardings(self, abstract_state: State, mesh: Mesh) -> Any:
        """Two {params, optimizer state} pairs laid out like the default state; the rest replicated."""
        out = {}
        for params_key, opt_key in (("gen_params", "gen_opt"), ("disc_params", "disc_opt")):
            sh = self.param_shardings(abstract_state[params_key], mesh)
            out[params_key] = sh
            out[opt_key] = sharding.derived_state_shardings(abstract_state[opt_key], abstract_state[params_key],
                                                            sh, mesh)
        for key in abstract_state:
            if key not in out:
                out[key] = jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), abstract_state[key])
        return out

    def load_pretrained(self, state: State) -> State:
        """`vqgan_loss.finetune_from`: generator params from a dalle model checkpoint of the same architecture."""
        path = self.lc.finetune_from
        if not path:
            return state
        from dalle import model_dir as checkpoint

        config, params = checkpoint.load_model(path)
        theirs = vqgan_lib.VQGANConfig.from_config(config)
        ignore = ("beta", "legacy_loss", "dropout", "resolution")
        diffs = [f"{f}: {getattr(theirs, f)!r} != {getattr(self.cfg, f)!r}" for f in self.cfg.__dataclass_fields__
                 if f not in ignore and getattr(theirs, f) != getattr(self.cfg, f)]
        if diffs:
            raise ValueError(f"vqgan_loss.finetune_from={path!r} has another architecture: " + "; ".join(diffs))
        vqgan_lib.check_params(params, self.cfg, what=f"params of {path!r}")
        gen = jax.tree_util.tree_map(lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding),
                                     params, state["gen_params"])
        state = dict(state, gen_params=gen)
        if "ema" in state:
            emb = gen["quantize"]["embeddings"]
            state["ema"] = {"cluster_size": jnp.ones_like(state["ema"]["cluster_size"]),
                            "embed_sum": jax.device_put(emb, state["ema"]["embed_sum"].sharding)}
        return state

    # --- losses -----------------------------------------------------------------------------------------------
    def _quant_term(self, q: vqgan_lib.QuantizerOutput) -> jax.Array:
        """The quantizer loss that trains params; with EMA updates the codebook term is left out."""
        if not self.lc.use_ema:
            return q.loss
        return q.commit_loss * (1.0 if self.cfg.legacy_loss else self.cfg.beta)

    def _nll(self, x: jax.Array, recon: jax.Array) -> jax.Array:
        rec = losses.pixel_loss(x, recon, self.lc.l1_weight, self.lc.l2_weight)
        if self.lc.foreground_weight:
            w = losses.foreground_weights(x, self.lc.foreground_weight)
            nll = jnp.mean(rec * w) / jnp.mean(w)  # normalized: the loss keeps its scale next to the codebook term
        else:
            nll = jnp.mean(rec)
        if self.perceptual is not None:
            nll = nll + self.lc.perceptual_weight * jnp.mean(self.perceptual(x, recon))
        return nll

    def generator_grads(self, gen_params, disc_params, x, rng, gan_on, quant_on=True):
        """Gradients of taming's generator loss with one backward pass through the generator.

        The loss depends on the generator only through (recon, quantizer loss), so dL/d(recon) is formed from
        the nll and GAN parts, and the adaptive weight from their gradients at decoder/conv_out's kernel, which
        only needs that conv's own vjp on the features feeding it."""
        lc = self.lc

        def fwd(p):
            out = self.model.apply(p, x, rng, train=True, quantize=quant_on)
            q_term = self._quant_term(out.quant)
            if quant_on is not True:  # no commitment to a codebook that is not in use yet
                q_term = jnp.where(quant_on, q_term, 0.0)
            return (out.recon, q_term), out

        (recon, q_term), vjp_fn, out = jax.vjp(fwd, gen_params, has_aux=True)
        nll, d_nll = jax.value_and_grad(lambda r: self._nll(x, r))(recon)

        def with_gan(_):
            g_loss, d_g = jax.value_and_grad(lambda r: -jnp.mean(self.disc.apply(disc_params, r)))(recon)
            if lc.adaptive_weight:
                w = gen_params["decoder/conv_out"]["w"]
                h = jax.lax.stop_gradient(out.last_features)
                _, conv_vjp = jax.vjp(
                    lambda k: vqgan_lib.conv2d(h, k, None, 1, ((1, 1), (1, 1))).astype(jnp.float32), w)
                d_weight = losses.adaptive_weight(conv_vjp(d_nll)[0], conv_vjp(d_g)[0], lc.disc_weight)
            else:
                d_weight = jnp.asarray(lc.disc_weight, jnp.float32)
            return g_loss, d_g, d_weight

        def without_gan(_):
            return jnp.zeros((), jnp.float32), jnp.zeros_like(recon), jnp.zeros((), jnp.float32)

        g_loss, d_g, d_weight = jax.lax.cond(gan_on, with_gan, without_gan, None)
        disc_factor = jnp.where(gan_on, lc.disc_factor, 0.0)
        cot = d_nll + (d_weight * disc_factor) * d_g
        (grads,) = vjp_fn((cot, jnp.asarray(lc.codebook_weight, q_term.dtype)))
        loss = nll + d_weight * disc_factor * g_loss + lc.codebook_weight * q_term
        metrics = {"loss": loss, "nll_loss": nll, "g_loss": g_loss, "d_weight": d_weight,
                   "disc_factor": disc_factor, "quant_loss": q_term}
        return grads, out, metrics

    def _seed_codebook_at_warmup_end(self, step, emb, usage, state, z_flat, rng):
        """At the last warm-up step: codebook <- k-means++ seeds from this batch's encoder outputs (in the space
        codes are matched in), usage and EMA statistics reset."""
        n = self.cfg.n_embed
        seed_now = step == self.lc.quantize_start - 1
        if self.cfg.l2_norm_codes:
            z_flat = vqgan_lib.l2_normalize(z_flat)
        seeds = jax.lax.cond(seed_now, lambda: losses.kmeans_plus_plus(z_flat, n, rng),
                             lambda: emb.astype(jnp.float32))
        emb = jnp.where(seed_now, seeds, emb)
        usage = jnp.where(seed_now, 1.0 / n, usage)
        if "ema" in state:
            ema = state["ema"]
            state = dict(state, ema={"cluster_size": jnp.where(seed_now, 1.0, ema["cluster_size"]),
                                     "embed_sum": jnp.where(seed_now, seeds, ema["embed_sum"])})
        return emb, usage, state

    def _disc_loss(self, disc_params, x, recon, disc_factor):
        real = self.disc.apply(disc_params, x)
        fake = self.disc.apply(disc_params, jax.lax.stop_gradient(recon))
        return disc_factor * self.d_loss_fn(real, fake), (jnp.mean(real), jnp.mean(fake))

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        lc, cfg = self.lc, self.cfg
        x = sharding.constrain(images_to_model_range(batch["image"]), ("batch", None, None, None))
        step = state["step"]
        k_drop, k_restart = jax.random.split(jax.random.fold_in(rng, 0))
        gan_on = jnp.logical_and(step >= lc.disc_start, lc.disc_factor > 0)
        warmup = lc.quantize_start > 0
        quant_on = step >= lc.quantize_start if warmup else True

        grads, out, metrics = self.generator_grads(state["gen_params"], state["disc_params"], x, k_drop, gan_on,
                                                   quant_on)
        updates, gen_opt = self.gen_tx.update(grads, state["gen_opt"], state["gen_params"])
        gen = optax.apply_updates(state["gen_params"], updates)

        # Codebook statistics, EMA updates and dead-code restarts (on the codes of this batch).
        codes = out.quant.codes
        counts, used, perplexity = losses.code_stats(codes, cfg.n_embed)
        share = counts / jnp.maximum(jnp.sum(counts), 1.0)
        usage = lc.usage_decay * state["usage"] + (1 - lc.usage_decay) * share
        if warmup:
            usage = jnp.where(quant_on, usage, state["usage"])
        new_state = dict(state)
        emb = gen["quantize"]["embeddings"]
        z_flat = jax.lax.stop_gradient(out.z_e).reshape(-1, cfg.embed_dim)
        if lc.use_ema:
            sums = jnp.zeros((cfg.n_embed, cfg.embed_dim), jnp.float32).at[codes.reshape(-1)].add(z_flat)
            cs = lc.ema_decay * state["ema"]["cluster_size"] + (1 - lc.ema_decay) * counts
            es = lc.ema_decay * state["ema"]["embed_sum"] + (1 - lc.ema_decay) * sums
            total = jnp.sum(cs)
            smoothed = (cs + lc.ema_eps) / (total + cfg.n_embed * lc.ema_eps) * total
            emb = es / smoothed[:, None]
            new_state["ema"] = {"cluster_size": cs, "embed_sum": es}
        dead = usage * cfg.n_embed < lc.dead_code_threshold
        metrics["dead_codes"] = jnp.sum(dead.astype(jnp.float32))
        if lc.restart_dead_codes:
            restart = jnp.logical_and(dead, (step + 1) % lc.restart_every == 0)
            if warmup:
                restart = jnp.logical_and(restart, quant_on)
            # Re-seed on encoder outputs drawn in proportion to their quantization error: on mostly-background
            # images uniform draws land on background again and collapse, error-weighted ones land on edges.
            zq_flat = jax.lax.stop_gradient(out.quant.z_q).reshape(-1, cfg.embed_dim)
            err = jnp.sum(jnp.square(z_flat - zq_flat), axis=-1)
            pick = jax.random.categorical(k_restart, jnp.log(err + 1e-12), shape=(cfg.n_embed,))
            fresh = z_flat[pick]
            emb = jnp.where(restart[:, None], fresh, emb)
            usage = jnp.where(restart, 1.0 / cfg.n_embed, usage)
            if lc.use_ema:
                ema = new_state["ema"]
                new_state["ema"] = {"cluster_size": jnp.where(restart, 1.0, ema["cluster_size"]),
                                    "embed_sum": jnp.where(restart[:, None], fresh, ema["embed_sum"])}
            metrics["restarted_codes"] = jnp.sum(restart.astype(jnp.float32))
        if warmup:
            emb, usage, new_state = self._seed_codebook_at_warmup_end(step, emb, usage, new_state, z_flat, k_restart)
        gen = {**gen, "quantize": {**gen["quantize"], "embeddings": emb.astype(gen["quantize"]["embeddings"].dtype)}}

        # Discriminator update (skipped entirely before disc_start).
        def disc_update(_):
            (d_loss, (lr_, lf_)), d_grads = jax.value_and_grad(self._disc_loss, has_aux=True)(
                state["disc_params"], x, out.recon, jnp.asarray(lc.disc_factor, jnp.float32))
            d_upd, d_opt = self.disc_tx.update(d_grads, state["disc_opt"], state["disc_params"])
            return optax.apply_updates(state["disc_params"], d_upd), d_opt, d_loss, lr_, lf_

        def disc_skip(_):
            z = jnp.zeros((), jnp.float32)
            return state["disc_params"], state["disc_opt"], z, z, z

        disc, disc_opt, d_loss, logits_real, logits_fake = jax.lax.cond(gan_on, disc_update, disc_skip, None)

        new_state.update(step=step + 1, gen_params=gen, disc_params=disc, gen_opt=gen_opt, disc_opt=disc_opt,
                         usage=usage)
        metrics.update(
            rec_loss=jnp.mean(jnp.abs(x - out.recon)),
            l2_loss=jnp.mean(jnp.square(x - out.recon)),
            psnr=losses.psnr(x, out.recon),
            codebook_loss=out.quant.codebook_loss,
            commit_loss=out.quant.commit_loss,
            d_loss=d_loss, logits_real=logits_real, logits_fake=logits_fake,
            codebook_usage=used, perplexity=perplexity,
            grad_norm=optax.global_norm(grads),
        )
        return new_state, metrics

    def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
        x = images_to_model_range(batch["image"])
        out = self.model.apply(state["gen_params"], x)
        _, used, perplexity = losses.code_stats(out.quant.codes, self.cfg.n_embed)
        return {"rec_loss": jnp.mean(jnp.abs(x - out.recon)), "psnr": losses.psnr(x, out.recon),
                "quant_loss": out.quant.loss, "codebook_usage": used, "perplexity": perplexity}

    # --- data -------------------------------------------------------------------------------------------------
    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        bs = int(self.config.train.batch_size)
        if self._train_iterator_fn is not None:
            return self._train_iterator_fn(process_index, process_count)
        from dalle.data.image_batches import image_batches

        return image_batches(self.config.data, "train", bs, process_index, process_count)

    def eval_data(self, process_index: int, process_count: int) -> Iterator[Batch] | None:
        if self._train_iterator_fn is not None or "data" not in self.config:
            return None
        from dalle.data.image_batches import validation_batches

        return validation_batches(self.config.data, int(self.config.train.batch_size), process_index, process_count)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        s = self.image_size
        return {"image": jax.ShapeDtypeStruct((batch_size, s, s, self.cfg.in_channels), jnp.uint8)}

    # --- reporting --------------------------------------------------------------------------------------------
    def summaries(self, state: State, step: int) -> dict[str, np.ndarray]:
        """Originals (top row) over reconstructions (bottom row) of a fixed set of training images."""
        n = int(self.lc.summary_images)
        if n == 0:
            return {}
        if self._summary_images is None:
            it = self.train_data(0, 1)
            self._summary_images = np.asarray(next(it)["image"])[:n]
        if self._recon_fn is None:
            self._recon_fn = jax.jit(lambda p, x: self.model.apply(p, images_to_model_range(x)).recon)
        images = self._summary_images
        recon = np.asarray(jax.device_get(self._recon_fn(state["gen_params"], images)))
        recon = np.clip((recon + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        orig = images if images.dtype == np.uint8 else np.clip(images * 255 + 0.5, 0, 255).astype(np.uint8)
        return {"reconstructions": image_grid(np.stack([orig, recon]))[None]}

    def export_params(self, state: State) -> tuple[Any, ConfigDict]:
        config = ConfigDict({"name": self.config.get("name", "vqgan"), "model": self.config.model.to_dict(),
                             "mesh": {"logical_rules": sharding.config_logical_rules(self.config)}})
        return state["gen_params"], config


def image_grid(rows: np.ndarray, pad: int = 2) -> np.ndarray:
    """[R, C, H, W, 3] uint8 -> one [R*(H+pad)+pad, C*(W+pad)+pad, 3] image with gray separators."""
    r, c, h, w, ch = rows.shape
    grid = np.full((r * (h + pad) + pad, c * (w + pad) + pad, ch), 128, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = rows[i, j]
    return grid


def _loss_defaults() -> ConfigDict:
    from dalle.modeling.vqgan import schema as vqgan_schema

    return vqgan_schema.loss_defaults()
