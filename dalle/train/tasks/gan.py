"""The text-conditional GAN (dalle/modeling/gan) as a `Task` of the one train loop: `model.kind = "gan"`.

State: {"step", "gen_params", "disc_params", "text_params", "gen_opt", "disc_opt"}, plus "text_opt" when the
sentence encoder trains (`model.train_text_encoder`) and "gen_ema" with `gan_loss.ema_decay` > 0.

One `train_step`: the generator draws one batch of fakes (one forward pass, its vjp kept); the discriminator (and
the sentence encoder) step on real pairs, fakes and real images with another caption (Reed et al. 2016's
matching-aware loss, hinge form, projection logits of Miyato & Koyama 2018, optional R1 and XMC-GAN terms); then
the generator steps against the updated discriminator on the same fakes, its gradient pulled back through the kept
vjp (no second generator forward pass). The generator sees the sentence embedding as a constant: the encoder
learns from the discriminator's judgement of pairs. Batches: {"image": uint8 [B, S, S, 3], "text_tokens": int32
[B, context_length]}, captions tokenized on the host exactly as GANGenerator tokenizes prompts.

    dalle train --config configs/gan_shapes.py --workdir outputs/demo/gan
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from dalle import registry, sharding
from dalle.modeling.gan import losses
from dalle.modeling.gan import model as gan_lib
from dalle.modeling.gan import schema as gan_schema
from dalle.modeling.gan.text import CaptionTokenizer
from dalle.train.task import Batch, DataIterator, Metrics, State, Task
from dalle.train.tasks.clip import TokenizingIterator
from dalle.train.tasks.vqgan import image_grid, images_to_model_range, make_optimizer

# (params, optimizer state) pairs of the state; "text_opt" exists only when the sentence encoder trains.
PARAM_PAIRS = (("gen_params", "gen_opt"), ("disc_params", "disc_opt"), ("text_params", "text_opt"))


@registry.TASKS.register("gan")
class GANTask(Task):
    """Generator optimized with `train.optimizer`; discriminator and sentence encoder with the same recipe at
    `gan_loss.disc_lr_scale` times the learning rate."""

    def __init__(self, config: ConfigDict, train_iterator_fn=None):
        super().__init__(config)
        self.lc = config.get("gan_loss") or gan_schema.loss_defaults()
        self.gan = gan_lib.GAN(config.model, contrastive=self.lc.contrastive_weight > 0)
        self.train_text = bool(config.model.train_text_encoder)
        self.gen_tx = make_optimizer(config.train)
        self.disc_tx = make_optimizer(config.train, self.lc.disc_lr_scale)  # also steps a trained text encoder
        self._train_iterator_fn = train_iterator_fn  # (process_index, process_count) -> DataIterator (tests)
        self._tokenizer: CaptionTokenizer | None = None
        self._summary_tokens: np.ndarray | None = None
        self._sample_fn = None

    @property
    def tokenizer(self) -> CaptionTokenizer:
        if self._tokenizer is None:
            self._tokenizer = CaptionTokenizer.from_config(self.config)
        return self._tokenizer

    # --- state ------------------------------------------------------------------------------------------------
    def init_state(self, rng: jax.Array) -> State:
        params = self.gan.init(rng)
        state = {"step": jnp.zeros((), jnp.int32),
                 "gen_params": params["generator"], "disc_params": params["discriminator"],
                 "text_params": params["text"],
                 "gen_opt": self.gen_tx.init(params["generator"]),
                 "disc_opt": self.disc_tx.init(params["discriminator"])}
        if self.train_text:
            state["text_opt"] = self.disc_tx.init(params["text"])
        if self.lc.ema_decay > 0:
            state["gen_ema"] = jax.tree_util.tree_map(jnp.copy, params["generator"])
        return state

    def partition_rules(self) -> sharding.ParamRules:
        return sharding.get_partition_rules("gan")

    def state_shardings(self, abstract_state: State, mesh: Mesh) -> Any:
        """Each params tree by the rules and its optimizer state like it; the EMA like the generator."""
        out = {}
        for params_key, opt_key in PARAM_PAIRS:
            sh = self.param_shardings(abstract_state[params_key], mesh)
            out[params_key] = sh
            if opt_key in abstract_state:
                out[opt_key] = sharding.derived_state_shardings(abstract_state[opt_key],
                                                                abstract_state[params_key], sh, mesh)
        if "gen_ema" in abstract_state:
            out["gen_ema"] = out["gen_params"]
        for key in abstract_state:
            if key not in out:
                out[key] = jax.tree_util.tree_map(lambda _: sharding.replicated(mesh), abstract_state[key])
        return out

    def load_pretrained(self, state: State) -> State:
        """`model.text_encoder_init`: the sentence encoder from a CLIP model dir's text tower."""
        path = self.config.model.get("text_encoder_init", "")
        if not path:
            return state
        text = clip_text_params(path, self.config.model, state["text_params"])
        text = jax.tree_util.tree_map(lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding),
                                      text, state["text_params"])
        return dict(state, text_params=text)

    # --- steps ------------------------------------------------------------------------------------------------
    def _disc_loss(self, disc_params, text_params, x, fake, tokens, wrong, valid):
        """The discriminator's loss on real pairs, fakes and mismatched captions (+ R1, + contrastive)."""
        lc, gan = self.lc, self.gan
        s = gan.encode_text(text_params, tokens)

        def real_logits(images):
            h = gan.features(disc_params, images)
            return gan.logits(disc_params, h, s), h

        aux = {}
        if lc.r1_gamma > 0:  # the input gradient of the real pass itself: R1 costs one extra backward, no forward
            real, vjp_fn, h_real = jax.vjp(real_logits, x, has_aux=True)
            r1 = losses.r1_penalty(vjp_fn(jnp.ones_like(real))[0])
            aux["r1"] = r1
        else:
            real, h_real = real_logits(x)
            r1 = jnp.zeros((), jnp.float32)
        fake_logits = gan.logits(disc_params, gan.features(disc_params, fake), s)
        mismatched = gan.logits(disc_params, h_real, s[wrong])
        loss = losses.matching_aware_d_loss(real, fake_logits, mismatched, lc.mismatch_weight, valid)
        aux.update(d_adv_loss=loss, logits_real=jnp.mean(real), logits_fake=jnp.mean(fake_logits),
                   logits_mismatch=jnp.mean(mismatched),
                   **losses.accuracies(real, fake_logits, mismatched, valid))
        loss = loss + 0.5 * lc.r1_gamma * r1
        if lc.contrastive_weight > 0:
            img, txt = gan.contrast(disc_params, h_real, s)
            c_loss, c_acc = losses.info_nce(img, txt, lc.contrastive_temperature)
            loss = loss + lc.contrastive_weight * c_loss
            aux.update(d_contrastive_loss=c_loss, d_contrastive_acc=c_acc)
        return loss, aux

    def _gen_loss(self, fake, disc_params, x, s):
        """The generator's loss as a function of its images (the discriminator fixed)."""
        lc, gan = self.lc, self.gan
        h = gan.features(disc_params, fake)
        loss = losses.generator_hinge_loss(gan.logits(disc_params, h, s))
        aux = {"g_adv_loss": loss}
        if lc.contrastive_weight > 0:
            img, txt = gan.contrast(disc_params, h, s)
            sent_loss, sent_acc = losses.info_nce(img, txt, lc.contrastive_temperature)
            real_img, _ = gan.contrast(disc_params, jax.lax.stop_gradient(gan.features(disc_params, x)), s)
            img_loss, _ = losses.info_nce(img, jax.lax.stop_gradient(real_img), lc.contrastive_temperature)
            loss = loss + lc.contrastive_weight * (sent_loss + img_loss)
            aux.update(g_sentence_loss=sent_loss, g_sentence_acc=sent_acc, g_image_loss=img_loss)
        return loss, aux

    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        lc, gan = self.lc, self.gan
        x = sharding.constrain(images_to_model_range(batch["image"]), ("batch", None, None, None))
        tokens = batch["text_tokens"]
        z = jax.random.normal(jax.random.fold_in(rng, 0), (x.shape[0], gan.cfg.z_dim), jnp.float32)
        wrong, valid = losses.mismatch_index(tokens)
        s = jax.lax.stop_gradient(gan.encode_text(state["text_params"], tokens))
        fake, gen_vjp = jax.vjp(lambda p: gan.generate(p, z, s), state["gen_params"])

        # Discriminator (and sentence encoder) step.
        argnums = (0, 1) if self.train_text else 0
        (d_loss, d_aux), grads = jax.value_and_grad(self._disc_loss, argnums=argnums, has_aux=True)(
            state["disc_params"], state["text_params"], x, jax.lax.stop_gradient(fake), tokens, wrong, valid)
        d_grads, t_grads = grads if self.train_text else (grads, None)
        upd, disc_opt = self.disc_tx.update(d_grads, state["disc_opt"], state["disc_params"])
        disc = optax.apply_updates(state["disc_params"], upd)
        new_state = dict(state, disc_params=disc, disc_opt=disc_opt)
        metrics = {"d_grad_norm": optax.tree.norm(d_grads)}
        if self.train_text:
            upd, text_opt = self.disc_tx.update(t_grads, state["text_opt"], state["text_params"])
            new_state.update(text_params=optax.apply_updates(state["text_params"], upd), text_opt=text_opt)
            metrics["text_grad_norm"] = optax.tree.norm(t_grads)

        # Generator step against the updated discriminator, on the same fakes.
        (g_loss, g_aux), d_fake = jax.value_and_grad(self._gen_loss, has_aux=True)(fake, disc, x, s)
        (g_grads,) = gen_vjp(d_fake)
        upd, gen_opt = self.gen_tx.update(g_grads, state["gen_opt"], state["gen_params"])
        gen = optax.apply_updates(state["gen_params"], upd)
        new_state.update(gen_params=gen, gen_opt=gen_opt, step=state["step"] + 1)
        if "gen_ema" in state:
            new_state["gen_ema"] = ema_update(state["gen_ema"], gen, lc.ema_decay, state["step"])

        metrics.update(loss=d_loss + g_loss, d_loss=d_loss, g_loss=g_loss, g_grad_norm=optax.tree.norm(g_grads),
                       mismatch_pairs=jnp.mean(valid.astype(jnp.float32)), **d_aux, **g_aux)
        return new_state, metrics

    # --- data -------------------------------------------------------------------------------------------------
    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        if self._train_iterator_fn is not None:
            inner = self._train_iterator_fn(process_index, process_count)
        else:
            from dalle.data.image_batches import image_batches

            inner = image_batches(self.config.data, "train", int(self.config.train.batch_size), process_index,
                                  process_count)
        return TokenizingIterator(inner, self.tokenizer.captions)

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        c = self.gan.cfg
        return {"image": jax.ShapeDtypeStruct((batch_size, c.image_size, c.image_size, 3), jnp.uint8),
                "text_tokens": jax.ShapeDtypeStruct((batch_size, c.context_length), jnp.int32)}

    # --- reporting --------------------------------------------------------------------------------------------
    def summaries(self, state: State, step: int) -> dict[str, np.ndarray]:
        """A grid of samples: one row per prompt (train.sample_prompts, else the first training captions), one
        column per fixed noise vector, from the generator that is exported (the EMA when on)."""
        n = int(self.lc.summary_noise)
        if n == 0:
            return {}
        if self._summary_tokens is None:
            prompts = list(self.config.train.get("sample_prompts", ()))
            if not prompts:
                prompts = [str(c) for c in next(iter(self.train_data(0, 1)))["caption"][:4]]
            self._summary_tokens = self.tokenizer.captions(prompts)
        if self._sample_fn is None:
            self._sample_fn = jax.jit(lambda g, t, tok, z: gan_lib.to_uint8(
                self.gan.generate(g, z, self.gan.encode_text(t, tok))))
        p = len(self._summary_tokens)
        tokens = np.repeat(self._summary_tokens, n, axis=0)
        z = np.tile(gan_lib.noise(0, range(n), self.gan.cfg.z_dim), (p, 1))
        params = state.get("gen_ema", state["gen_params"])
        images = np.asarray(jax.device_get(self._sample_fn(params, state["text_params"], tokens, z)))
        return {"samples": image_grid(images.reshape(p, n, *images.shape[1:]))[None]}

    def export_params(self, state: State) -> tuple[Any, ConfigDict]:
        """{"text", "generator"} (the EMA generator when on): what GANGenerator samples with."""
        params = {"text": state["text_params"], "generator": state.get("gen_ema", state["gen_params"])}
        config = ConfigDict({"name": self.config.get("name", "gan"), "model": self.config.model.to_dict(),
                             "mesh": {"logical_rules": sharding.config_logical_rules(self.config)}})
        if "data" in self.config:
            config.data = self.config.data.to_dict()  # tokenizer_path and caption normalization for prompts
        return params, config


def ema_update(ema: Any, params: Any, decay: float, step: jax.Array) -> Any:
    """Exponential moving average with TensorFlow's warm-up, decay_t = min(decay, (1 + t) / (10 + t)): early
    averages are not dominated by the random initialisation."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)).astype(jnp.float32)
    return jax.tree_util.tree_map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def clip_text_params(path: str, model: ConfigDict, target: Any) -> Any:
    """The `text/...` params of the CLIP model dir at `path`, checked against the GAN's sentence encoder
    (`target`: its params or their shapes). Raises ValueError naming what differs."""
    from dalle import model_dir

    config, params = model_dir.load_model(path)
    m = config.get("model") if "model" in config else None
    if m is None or m.get("kind") != "clip":
        raise ValueError(f"model.text_encoder_init = {path!r} holds a model of kind "
                         f"{None if m is None else m.get('kind')!r}, not a CLIP")
    problems = []
    if m.get("text_pool", "argmax") != "eos" or m.get("tokenizer", "sentencepiece") != "sentencepiece":
        problems.append("its text tower is not pooled at the sentencepiece EOS (text_pool 'eos')")
    if m.get("activation", "quick_gelu") != model.activation:
        problems.append(f"activation {m.get('activation', 'quick_gelu')!r} != model.activation {model.activation!r}")
    text = {k: v for k, v in params.items() if k.startswith(gan_lib.TEXT_PREFIX)}
    want = {k: {n: tuple(np.shape(a)) for n, a in v.items()} for k, v in target.items()}
    have = {k: {n: tuple(np.shape(a)) for n, a in v.items()} for k, v in text.items()}
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            problems.append(f"{k}: {have.get(k)} in the CLIP, {want.get(k)} in the GAN")
    if problems:
        raise ValueError(f"model.text_encoder_init = {path!r} does not fit the GAN's sentence encoder (set model."
                         f"embed_dim, context_length, vocab_size and text_* as the CLIP's):\n  " +
                         "\n  ".join(problems[:12]))
    return text
