"""Contrastive CLIP training through the one train loop (dalle/train/loop.py): `model.kind = "clip"`.

Why train our own: the shapes world needs a CLIP that knows its words and pictures for reranking, CLIP score and
FID-CLIP (a published CLIP has never seen 32 px shapes). Captions are tokenized on the host with the project's
sentencepiece vocabulary (exactly as the DALL·E data is), so the loop's batches carry `text_tokens`; images go in
as uint8 and are normalized (and resized, if model.image_size differs) inside the jitted step.

    dalle train --config configs/clip_shapes.py --workdir outputs/clip_shapes
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

from dalle import registry, sharding
from dalle.modeling.clip import model as clip_lib
from dalle.train import optim
from dalle.train.task import Batch, DataIterator, Metrics, State, Task


class TokenizingIterator(DataIterator):
    """Wraps an image+caption iterator (dalle.data.image_batches) and adds `text_tokens` int32 [B, context_length]; the position is
    the wrapped iterator's."""

    def __init__(self, inner: Any, tokenize):
        self.inner, self.tokenize = inner, tokenize

    def __next__(self) -> Batch:
        batch = next(self.inner)
        return {"image": batch["image"], "text_tokens": self.tokenize(list(batch["caption"])),
                "caption": batch["caption"]}

    def get_state(self) -> dict:
        return self.inner.get_state()

    def set_state(self, state: dict) -> None:
        self.inner.set_state(state)


@registry.TASKS.register("clip")
class CLIPTask(Task):
    def __init__(self, config: ConfigDict):
        super().__init__(config)
        m = config.model.to_dict()
        self._tokenize = None
        if m.get("text_pool") == "eos" and int(m.get("eos_id", -1)) < 0:
            from dalle.tokenizers.sentencepiece import EOS_ID

            m = clip_lib.resolve_eos(m, EOS_ID)
        self.model_config = ConfigDict(m)
        self.model = clip_lib.CLIP(m)
        abstract = jax.eval_shape(self.model.init, jax.random.PRNGKey(0))
        self.tx = optim.make_optimizer(config.train, abstract)

    def _tokenizer(self):
        if self._tokenize is None:
            data = self.config.data if "data" in self.config else {}
            self._tokenize = clip_lib.make_tokenizer(self.model_config, data.get("tokenizer_path", ""),
                                                     data.get("unknown_words", "keep"))
        return self._tokenize

    # --- state (the default {"params", "opt_state", "step"} of dalle.train.task) --------------------------------
    def init_params(self, rng: jax.Array) -> Any:
        return self.model.init(rng)

    def partition_rules(self) -> sharding.ParamRules:
        return sharding.get_partition_rules("clip")

    # --- steps -----------------------------------------------------------------------------------------------
    def _loss(self, params, batch):
        images = sharding.constrain(self.model.normalize_device(batch["image"]), ("batch", None, None, None))
        return self.model.loss(params, images, batch["text_tokens"])

    def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
        (loss, aux), grads = jax.value_and_grad(self._loss, has_aux=True)(state["params"], batch)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # OpenAI clamps the temperature at 100: keep the parameter itself inside, so it cannot drift away.
        params = {**params, "~": {**params["~"], "logit_scale": jnp.minimum(params["~"]["logit_scale"],
                                                                            clip_lib.MAX_LOGIT_SCALE)}}
        return ({"params": params, "opt_state": opt_state, "step": state["step"] + 1},
                {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux})

    def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
        loss, aux = self._loss(state["params"], batch)
        return {"loss": loss, **aux}

    # --- data ------------------------------------------------------------------------------------------------
    def _iterator(self, split: str, process_index: int, process_count: int, num_examples: int | None):
        from dalle.data.image_batches import image_batches

        it = image_batches(self.config.data, split, int(self.config.train.batch_size), process_index,
                           process_count, num_examples=num_examples)
        return TokenizingIterator(it, self._tokenizer())

    def train_data(self, process_index: int, process_count: int) -> DataIterator:
        return self._iterator("train", process_index, process_count, None)

    def eval_data(self, process_index: int, process_count: int) -> Iterator[Batch] | None:
        from dalle.data.image_batches import split_size

        bs = int(self.config.train.batch_size)
        n = split_size(self.config.data, "validation")
        return self._iterator("validation", process_index, process_count, n) if n >= bs else None

    def batch_spec(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        s = int(self.config.data.image_size)
        return {"image": jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.uint8),
                "text_tokens": jax.ShapeDtypeStruct((batch_size, self.model.cfg.context_length), jnp.int32)}

    # --- reporting -------------------------------------------------------------------------------------------
    def flops_per_example(self) -> float:
        """6 x params-touching FLOPs per token (forward + backward) over image patches and text tokens."""
        c = self.model.cfg
        per_layer = lambda w, mlp: 4 * w * w + 2 * w * mlp  # noqa: E731 - qkv + out + mlp
        img_tokens = c.grid * c.grid + 1
        return float(6 * (img_tokens * c.vision_layers * per_layer(c.vision_width, c.vision_mlp_dim)
                          + c.context_length * c.text_layers * per_layer(c.text_width, c.text_mlp_dim)))

    def export_params(self, state: State) -> tuple[Any, ConfigDict]:
        m = ConfigDict(self.model_config.to_dict())
        if not m.get("tokenizer_path") and "data" in self.config:
            m.tokenizer_path = self.config.data.get("tokenizer_path", "")
        mesh = {"logical_rules": sharding.config_logical_rules(self.config)}  # the layout it trained with
        return state["params"], ConfigDict({"model": m, "data": self.config.data.to_dict(), "mesh": mesh})
