"""Training recipe of the text-to-image models (DalleBart and decoder-only) for the one train loop.

State: {"params", "opt_state", "step"}. Gradient accumulation runs `train.grad_accum_steps` microbatches through
`lax.scan` inside the jitted step (one compile, memory of one microbatch). `train.freeze_encoder` and
`train.embeddings_only` select trainable params (the rest get no updates and no optimizer state);
`model.init_from` starts every param from a converted or trained model (whole-model fine-tuning) and
`model.encoder_init` the text encoder alone (over init_from's, when both are set), also from a Hugging Face BART,
BERT or RoBERTa directory (dalle/modeling/hf_encoders.py).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import ConfigDict

from dalle import registry, sharding
from dalle.modeling import model as model_lib
from dalle.train import optim
from dalle.train.task import DataIterator, Task


@registry.TASKS.register("dalle")
class DalleTask(Task):
    def __init__(self, config: ConfigDict):
        super().__init__(config)
        self.model = model_lib.build_model(config.model)
        tc = config.train
        if tc.freeze_encoder:
            trainable = lambda path: not self.model.encoder_param_filter(path)  # noqa: E731
        elif tc.embeddings_only:
            trainable = self.model.embedding_param_filter
        else:
            trainable = None
        if config.model.get("image_code_features", 0):  # the codebook table is data, never trained
            base = trainable or (lambda path: True)
            trainable = lambda path: base(path) and not is_code_feature_table(path)  # noqa: E731
        abstract = jax.eval_shape(self.model.init, jax.random.PRNGKey(0))
        self.tx = optim.make_optimizer(tc, abstract, trainable)
        self._sampler = None

    # --- state (the default {"params", "opt_state", "step"} of dalle.train.task) --------------------------------
    def init_params(self, rng: jax.Array) -> Any:
        return self.model.init(rng)

    def partition_rules(self) -> sharding.ParamRules:
        return self.model.partition_rules

    def load_pretrained(self, state: dict) -> dict:
        """Puts saved weights into the fresh state (a new run only; a resumed one restores its checkpoint):
        `model.init_from`: every param of a saved model (whole-model fine-tuning); then `model.encoder_init`: the
        text-encoder params of another (so with both set, the encoder comes from encoder_init); then
        `model.image_code_features`: the VQGAN's codebook in the frozen feature table (from this run's
        data.vqgan_checkpoint, whatever the saved models hold). Which params train is `train.freeze_encoder` /
        `train.embeddings_only`'s business, not this one's."""
        m = self.config.model
        if m.get("init_from", ""):
            state = self._copy_params(state, m.init_from, "model.init_from", lambda key: True)
        if m.get("encoder_init", ""):
            state = self._init_encoder(state, m.encoder_init)
        if m.get("image_code_features", 0):
            state = self._put_code_features(state)
        return state

    def _init_encoder(self, state: dict, path: str) -> dict:
        """`model.encoder_init`: a saved model's text encoder, or a Hugging Face BART / BERT / RoBERTa directory's
        (dalle/modeling/hf_encoders.py converts it; the run's model section must describe that encoder)."""
        from dalle.modeling import hf_encoders

        if not hf_encoders.is_hf_encoder_dir(path):
            return self._copy_params(state, path, "model.encoder_init", self.model.encoder_param_filter)
        target = {k: tuple(np.shape(v)) for k, v in sharding.to_mapping(state["params"]).items()
                  if self.model.encoder_param_filter(k)}
        src = hf_encoders.load_encoder(path, self.config.model, target)

        def put(p, leaf):
            name = sharding.path_str(p)
            if name in src:
                return jax.device_put(jnp.asarray(src[name], leaf.dtype), leaf.sharding)
            return leaf

        return {**state, "params": jax.tree_util.tree_map_with_path(put, state["params"])}

    def _copy_params(self, state: dict, path: str, key: str, selected: Callable[[str], bool]) -> dict:
        """The state with every param `selected` by path copied from the model saved in `path` (a model directory
        or a trainer workdir), cast to the state's precision and laid out like it. One ValueError lists every
        selected param the source lacks, has with another shape, or has that this model lacks."""
        from dalle import model_dir as checkpoint

        if not os.path.exists(path):
            raise ValueError(f"{key} = {path!r} does not exist (a model directory or a trainer workdir)")
        src_config, src = checkpoint.load_model(path)
        src = sharding.to_mapping(src)
        dst = sharding.to_mapping(state["params"])
        want = [k for k in dst if selected(k)]
        missing = [f"missing {k} {tuple(np.shape(dst[k]))}" for k in want if k not in src]
        wrong = [f"{k}: {tuple(np.shape(src[k]))} there, {tuple(np.shape(dst[k]))} here" for k in want
                 if k in src and np.shape(src[k]) != np.shape(dst[k])]
        extra = [f"unexpected {k} {tuple(np.shape(src[k]))}" for k in sorted(src) if selected(k) and k not in dst]
        if missing or wrong or extra:
            raise ValueError(f"{key} = {path!r} does not fit this model ({len(missing)} missing, {len(wrong)} "
                             f"with other shapes, {len(extra)} unexpected; {_architecture_diff(src_config, self.config)}"
                             f"):\n  " + "\n  ".join(missing + wrong + extra))
        selected_keys = set(want)

        def put(p, leaf):
            name = sharding.path_str(p)
            if name in selected_keys:
                return jax.device_put(jnp.asarray(src[name], leaf.dtype), leaf.sharding)
            return leaf

        return {**state, "params": jax.tree_util.tree_map_with_path(put, state["params"])}

    def _put_code_features(self, state: dict) -> dict:
        m = self.config.model
        features = codebook_features(self.config.data.get("vqgan_checkpoint", ""), m.image_vocab_size,
                                     m.image_code_features, m.get("image_code_feature_source", "codebook"))

        def put(p, leaf):
            if is_code_feature_table(sharding.path_str(p)):
                return jax.device_put(jnp.asarray(features, leaf.dtype), leaf.sharding)
            return leaf

        return {**state, "params": jax.tree_util.tree_map_with_path(put, state["params"])}

    # --- steps -----------------------------------------------------------------------------------------------
    def _loss(self, params, batch, rng):
        return self.model.loss(params, batch, rng, is_training=True, compute_dtype=self.config.train.compute_dtype)

    def train_step(self, state: dict, batch: dict, rng: jax.Array):
        accum = self.config.train.grad_accum_steps
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        params = state["params"]
        if accum == 1:
            (_, metrics), grads = grad_fn(params, batch, rng)
        else:
            micro = jax.tree_util.tree_map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

            def body(carry, xs):
                g_sum, m_sum = carry
                mb, i = xs
                (_, m), g = grad_fn(params, mb, jax.random.fold_in(rng, i))
                return (jax.tree_util.tree_map(jnp.add, g_sum, g), jax.tree_util.tree_map(jnp.add, m_sum, m)), None

            zeros_g = jax.tree_util.tree_map(jnp.zeros_like, params)
            m_shape = jax.eval_shape(lambda: grad_fn(params, jax.tree_util.tree_map(lambda x: x[0], micro), rng)[0][1])
            zeros_m = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)
            (grads, metrics), _ = jax.lax.scan(body, (zeros_g, zeros_m), (micro, jnp.arange(accum)))
            grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
            metrics = jax.tree_util.tree_map(lambda m: m / accum, metrics)
        updates, opt_state = self.tx.update(grads, state["opt_state"], params)
        new_params = optax.apply_updates(params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    def eval_step(self, state: dict, batch: dict, rng: jax.Array):
        _, metrics = self.model.loss(state["params"], batch, None, is_training=False,
                                     compute_dtype=self.config.train.compute_dtype)
        return metrics

    # --- data ------------------------------------------------------------------------------------------------
    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        from dalle.data import pipeline

        per_host = sharding.local_batch_size(self.config.train.batch_size)
        return pipeline.token_batches(self.config, "train", per_host, process_index, process_count,
                                      seed=self.config.seed)

    def eval_data(self, process_index: int, process_count: int):
        from dalle.data import pipeline

        per_host = sharding.local_batch_size(self.config.train.batch_size)
        try:
            return pipeline.token_batches(self.config, "validation", per_host, process_index, process_count,
                                          seed=self.config.seed, num_epochs=1)
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def batch_spec(self, batch_size: int) -> dict:
        m = self.model
        return {"text_tokens": jax.ShapeDtypeStruct((batch_size, m.max_text_length), jnp.int32),
                "image_tokens": jax.ShapeDtypeStruct((batch_size, m.image_length), jnp.int32)}

    # --- reporting -------------------------------------------------------------------------------------------
    def flops_per_example(self) -> float:
        return self.model.flops_per_example()

    def tokens_per_example(self) -> int:
        return self.model.image_length

    def summaries(self, state: dict, step: int) -> dict[str, np.ndarray]:
        """A grid of samples for `train.sample_prompts` (needs data.tokenizer_path and data.vqgan_checkpoint)."""
        prompts = tuple(self.config.train.sample_prompts)
        if not prompts or not self.config.data.get("vqgan_checkpoint") or not self.config.data.get("tokenizer_path"):
            return {}
        from dalle import generation

        # One image per prompt, sampled as the exported model will be (the config's `sampling` section).
        images = generation.Generator.from_parts(self.config, state["params"]).images(
            prompts, num_images=1, seed=step)
        return {"samples": generation.make_grid(images, cols=len(prompts))[None]}

    def export_params(self, state: dict):
        """The params and the config with a complete `sampling` section, which generate/serve/eval read."""
        from dalle import sampling_schema

        return state["params"], sampling_schema.with_section(self.config)


def _architecture_diff(theirs: ConfigDict, ours: ConfigDict) -> str:
    """"model.k: X there, Y here; ..." for the model keys a saved model and this run set differently (leaving out
    the init paths, dropout and remat, which change no parameter): the likely cause of parameters that differ."""
    a = theirs.model if "model" in theirs else {}
    b = ours.model
    skip = {"encoder_init", "init_from", "remat", "dropout", "attention_dropout", "activation_dropout"}
    diffs = [f"model.{k}: {a[k]!r} there, {b[k]!r} here" for k in sorted(b.keys())
             if k not in skip and k in a and a[k] != b[k]]
    return "; ".join(diffs) if diffs else "the model sections agree"


def is_code_feature_table(path: str) -> bool:
    return path.endswith("/image_code_features")


def codebook_features(vqgan_dir: str, codes: int, dims: int, source: str = "codebook") -> np.ndarray:
    """The model's frozen feature table [codes, dims] (`model.image_code_features`), each column centred and scaled
    to unit variance. `source` "codebook": the VQGAN's codebook vectors; "codebook_pixels": those and the RGB pixels
    the VQGAN decoder draws for each code (the centre cell of a 3x3 grid of that code), so that codes that look
    alike get alike features, whatever their distance in the codebook."""
    from dalle import model_dir as checkpoint

    if not vqgan_dir:
        raise ValueError("model.image_code_features needs data.vqgan_checkpoint (the VQGAN whose codebook it uses)")
    config, params = checkpoint.load_model(vqgan_dir)
    table = sharding.to_mapping(params).get("quantize/embeddings")
    if table is None:
        kind = config.model.get("kind", "") if "model" in config else ""
        what = f" (a {kind} model)" if kind else ""
        raise ValueError(f"data.vqgan_checkpoint = {vqgan_dir!r}{what} has no quantize/embeddings codebook: "
                         f"model.image_code_features needs a VQGAN's")
    table = np.asarray(table, np.float32)
    if source == "codebook_pixels":
        table = np.concatenate([table, decoded_code_pixels(config, params, table.shape[0])], axis=1)
    elif source != "codebook":
        raise ValueError(f"model.image_code_feature_source = {source!r}: expected 'codebook' or 'codebook_pixels'")
    if table.shape != (codes, dims):
        raise ValueError(f"data.vqgan_checkpoint = {vqgan_dir!r} with model.image_code_feature_source = {source!r} "
                         f"gives {table.shape[0]} codes x {table.shape[1]} features, but model.image_vocab_size"
                         f" = {codes} and model.image_code_features = {dims}")
    return (table - table.mean(0)) / (table.std(0) + 1e-6)


def decoded_code_pixels(vqgan_config: Any, vqgan_params: Any, codes: int, batch: int = 256) -> np.ndarray:
    """[codes, 3 * f * f]: what the VQGAN decoder draws for each code, read from the centre cell of a 3x3 grid
    filled with it (the border cells keep the decoder's zero padding away from the centre)."""
    from dalle.modeling.vqgan.api import VQGANTokenizer

    tok = VQGANTokenizer(vqgan_params, vqgan_config)
    f = tok.downsample_factor
    out = []
    for start in range(0, codes, batch):
        ids = np.arange(start, min(start + batch, codes), dtype=np.int32)
        images = tok.decode(np.broadcast_to(ids[:, None, None], (len(ids), 3, 3)))
        out.append(images[:, f:2 * f, f:2 * f].reshape(len(ids), -1))
    return np.concatenate(out).astype(np.float32)
