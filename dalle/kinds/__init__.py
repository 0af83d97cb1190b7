"""Model kinds: what `model.kind` names, in one place each.

A kind is one `ModelKind` registered in `dalle.registry.MODEL_KINDS` by a module of this package (or by user code
before the config is validated): the schema of its `model` section, the training task that trains it, and, for the
text-to-image kinds, the token model the sampler runs and the layout of its training examples. Image tokenizers
(what turns images into codes and back) are registered beside the kind of model directory they load.

These modules stay light (no jax or tensorflow imports): config validation imports them. Heavy code is named as
`"module:attribute"` strings and resolved only when used (`dalle.registry.resolve`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import registry


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """Everything the code asks of a `model.kind`."""

    name: str
    description: str
    defaults: Callable[[], ConfigDict]  # the `model` section's keys and default values
    check: config_lib.Check | None  # (model section, whole config) -> error messages
    task: str  # name in dalle.registry.TASKS of the training task
    model: Any = None  # text-to-image kinds: the token model class ("module:Class"), built from the model section
    features: str | None = None  # text-to-image kinds: layout of training examples (dalle.data.tasks converters)
    # Text-to-image kinds that draw without image tokens (a GAN): "module:Class" whose `from_checkpoint(dir)` gives
    # an object with `images(prompts, num_images=, seed=)` -> uint8 [P * N, H, W, 3]; `dalle generate` uses it.
    direct_generator: Any = None

    @property
    def text_to_image(self) -> bool:
        return self.model is not None


def register_model_kind(kind: ModelKind, replace: bool = False) -> ModelKind:
    """Registers `kind` by its name, and the schema of its `model` section for config validation."""
    registry.MODEL_KINDS.register(kind.name, kind, replace=replace)
    config_lib.register_schema("model", kind.defaults, kind.check, kind=kind.name)
    return kind


def get(name: str) -> ModelKind:
    """The kind registered under `name`; an unknown name raises listing the known ones."""
    return registry.MODEL_KINDS.get(name)


def of(config: Any) -> ModelKind:
    """The kind of a config (or of its `model` section)."""
    model = config.get("model", config) if "kind" not in config else config
    return get(model.get("kind", ""))


@dataclasses.dataclass(frozen=True)
class ImageTokenizer:
    """Images <-> codes. `load(directory, mesh=None, rules=None)` returns an object with `encode(images)`,
    `decode_codes(codes)`, `codebook_size`, `tokens_per_side`, `image_size` and `downsample_factor`
    (dalle.modeling.vqgan.api.VQGANTokenizer is the reference)."""

    name: str  # the `model.kind` of the model directories it loads
    load: Any  # "module:callable" or a callable


def register_image_tokenizer(tokenizer: ImageTokenizer, replace: bool = False) -> ImageTokenizer:
    registry.IMAGE_TOKENIZERS.register(tokenizer.name, tokenizer, replace=replace)
    return tokenizer


def check_image_tokenizer_kind(directory: str, kind: str, expected: str, needed_by: str = "") -> None:
    """Raises CheckpointError when `expected` (a config's data.image_tokenizer, or what `needed_by` works with;
    empty: any) is not `kind`, the kind of image tokenizer `directory` holds."""
    from dalle import model_dir

    if expected and kind != expected:
        if needed_by:
            raise model_dir.CheckpointError(f"{needed_by} needs a {expected} image tokenizer, but {directory!r} "
                                            f"holds one of kind {kind!r}")
        raise model_dir.CheckpointError(
            f"data.image_tokenizer = {expected!r}, but {directory!r} holds an image tokenizer of kind {kind!r}: "
            f"point data.vqgan_checkpoint at a {expected} model directory, or set data.image_tokenizer = {kind!r}")


def load_image_tokenizer(directory: str, expected_kind: str = "", needed_by: str = "", **kwargs: Any) -> Any:
    """The image tokenizer saved in a model directory, chosen by the kind of model it holds (which must be
    `expected_kind` when that is given: a config's data.image_tokenizer)."""
    from dalle import model_dir

    config = model_dir.config_of(directory)
    kind = config.model.get("kind", "") if "model" in config else ""
    if kind not in registry.IMAGE_TOKENIZERS:
        raise model_dir.CheckpointError(
            f"{directory!r} holds a model of kind {kind!r}, which is not an image tokenizer "
            f"(known: {', '.join(registry.IMAGE_TOKENIZERS.names())})")
    check_image_tokenizer_kind(directory, kind, expected_kind, needed_by)
    return registry.resolve(registry.IMAGE_TOKENIZERS.get(kind).load)(directory, **kwargs)
