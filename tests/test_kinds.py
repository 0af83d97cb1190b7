"""dalle/kinds: model kinds by name. A toy kind and its task registered from this file alone train through the
one train loop, which proves that adding a kind is one module plus its config."""

from __future__ import annotations

import os

import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import kinds, registry
from dalle.train import loop
from tests import toy_task


def _toy_defaults() -> ConfigDict:
    return ConfigDict({"kind": "toy", "width": 4})


def _toy_check(m: ConfigDict, _: ConfigDict):
    if m.width <= 0:
        yield f"model.width = {m.width} must be positive"


class _RegisteredToyTask(toy_task.ToyTask):
    def export_params(self, state):
        return state["params"], ConfigDict({"model": self.config.model.to_dict()})


@pytest.fixture
def toy_kind():
    registry.TASKS.register("toy_task", _RegisteredToyTask, replace=True)
    kinds.register_model_kind(kinds.ModelKind(name="toy", description="a test's toy model", defaults=_toy_defaults,
                                              check=_toy_check, task="toy_task"), replace=True)
    yield
    registry.MODEL_KINDS.unregister("toy")
    registry.TASKS.unregister("toy_task")
    config_lib.SCHEMAS["model"].pop("toy", None)


def _toy_config(**model) -> ConfigDict:
    c = toy_task.toy_config()
    c.train.num_steps = 3
    c.train.eval_every = 0
    c.model = ConfigDict({"kind": "toy", **model})
    return c


def test_builtin_kinds_are_discovered_by_name():
    assert {"dalle_bart", "decoder_only", "vqgan", "clip"} <= set(registry.MODEL_KINDS.names())
    assert kinds.get("decoder_only").text_to_image and kinds.get("decoder_only").features == "decoder_only"
    assert not kinds.get("vqgan").text_to_image
    assert "vqgan" in registry.IMAGE_TOKENIZERS
    assert registry.TASKS.get(kinds.get("dalle_bart").task).__name__ == "DalleTask"


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(registry.UnknownNameError, match=r"'gpt' is not registered \(known: .*dalle_bart.*vqgan"):
        kinds.get("gpt")
    c = toy_task.toy_config()
    c.model = ConfigDict({"kind": "gpt"})
    with pytest.raises(config_lib.ConfigError, match=r"model.kind = 'gpt' is not one of \[.*'decoder_only'"):
        config_lib.validate(c)


def test_toy_kind_validates_trains_and_exports_through_the_loop(toy_kind, tmp_path):
    config = config_lib.validate(_toy_config())
    assert config.model.width == 4  # the toy schema's default was filled in
    with pytest.raises(config_lib.ConfigError, match="model.width = 0 must be positive"):
        config_lib.validate(_toy_config(width=0))
    with pytest.raises(config_lib.ConfigError, match="unknown key 'model.depth'"):
        config_lib.validate(_toy_config(depth=2))

    assert isinstance(loop.make_task(config), _RegisteredToyTask)
    result = loop.train(config, str(tmp_path))  # no task passed: the loop finds it from model.kind
    assert result.status == "done" and result.step == 3
    assert os.path.isfile(os.path.join(str(tmp_path), "model", "config.json"))


def test_a_kind_that_is_not_text_to_image_has_no_token_model(toy_kind):
    from dalle.modeling import model as model_lib

    with pytest.raises(config_lib.ConfigError, match="'toy' is not a text-to-image model"):
        model_lib.build_model(ConfigDict({"kind": "toy"}))


def test_a_toy_image_tokenizer_is_loaded_by_the_kind_of_its_model_directory(tmp_path):
    import numpy as np

    from dalle import model_dir

    loaded = []

    def load(directory, **kwargs):
        loaded.append((directory, kwargs))
        return "toy tokenizer"

    directory = str(tmp_path / "toy_vq")
    model_dir.save_model(directory, {"w": np.zeros(2, np.float32)}, ConfigDict({"model": {"kind": "toy_vq"}}))
    with pytest.raises(model_dir.CheckpointError, match=r"'toy_vq', which is not an image tokenizer \(known: .*vqgan"):
        kinds.load_image_tokenizer(directory)
    kinds.register_image_tokenizer(kinds.ImageTokenizer(name="toy_vq", load=load))
    try:
        assert kinds.load_image_tokenizer(directory, mesh=None) == "toy tokenizer"
        assert loaded == [(directory, {"mesh": None})]
    finally:
        registry.IMAGE_TOKENIZERS.unregister("toy_vq")
