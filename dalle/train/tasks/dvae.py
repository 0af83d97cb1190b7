"""dVAE training (DALL·E's recipe, "Zero-Shot Text-to-Image Generation" section 2.1) as a `Task` of the one train
loop: `model.kind = "dvae"`.

One step: encoder logits of map_pixels'd images, a Gumbel-softmax sample at temperature tau, the decoder's
logit-Laplace statistics of it, and the beta-weighted negative ELB (dalle/modeling/dvae/losses.py); tau and beta
follow the `dvae_loss` schedules by step. State is the default {"params", "opt_state", "step"}. Batches are
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
from ml_collections import ConfigDict

from dalle import precision, registry, sharding
from dalle.modeling.dvae import losses
from dalle.modeling.dvae import model as dvae_lib
from dalle.modeling.vqgan.losses import code_stats
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
        self.lc = config.get("dvae_loss") or _loss_defaults()
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
        """The relaxed negative ELB per pixel value of images in [0, 1], and its parts."""
        x = dvae_lib.map_pixels(images)
        logits = self.model.encoder_logits(params, x)
        z = losses.gumbel_softmax(rng, logits, temperature)
        stats = self.model.decoder_stats(params, z)
        loss, nll, kl = losses.negative_elb(x, stats, logits, kl_weight)
        return loss, {"logits": logits, "nll": nll, "kl": kl}

    def _hard_metrics(self, params: Any, images: jax.Array, logits: jax.Array) -> dict[str, jax.Array]:
        """What the tokenizer will do: argmax codes, their decoded images' PSNR and NLL, and code usage."""
        codes = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
        stats = self.model.decoder_stats(params, codes)
        recon = dvae_lib.stats_to_images(stats, self.cfg.output_channels)
        _, used, perplexity = code_stats(codes, self.cfg.vocab_size)
        return {"psnr": psnr(images, recon), "hard_nll": jnp.mean(losses.logit_laplace_nll(
                    dvae_lib.map_pixels(images), stats)),
                "codebook_usage": used, "perplexity": perplexity}

    # --- steps ------------------------------------------------------------------------------------------------
    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        images = sharding.constrain(images_to_unit_range(batch["image"]), ("batch", None, None, None))
        step = state["step"]
        tau, beta = self.temperature(step), self.kl_weight(step)
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state["params"], images, rng, tau, beta)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "nll": aux["nll"], "kl": aux["kl"], "temperature": tau, "kl_weight": beta,
                   "grad_norm": optax.tree.norm(grads),
                   **self._hard_metrics(state["params"], images, aux["logits"])}
        return {"params": params, "opt_state": opt_state, "step": step + 1}, metrics

    def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
        images = images_to_unit_range(batch["image"])
        logits = self.model.encoder_logits(state["params"], dvae_lib.map_pixels(images))
        kl = jnp.mean(losses.kl_to_uniform(logits))
        return {"kl": kl, **self._hard_metrics(state["params"], images, logits)}

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
