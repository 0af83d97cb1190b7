"""A config's own `mesh.logical_rules` lay a model out the same way in training, in generation and in VQGAN
encoding (exported models carry the rules); 8 fake CPU devices on a (data, fsdp, model) = (2, 2, 2) mesh."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle import generation, sharding
from dalle import model_dir as checkpoint
from dalle.modeling.vqgan.api import VQGANTokenizer
from dalle.train import loop
from dalle.train.tasks.dalle import DalleTask
from dalle.train.tasks.vqgan import ArrayImageIterator, VQGANTask
from tests import tiny_pipeline

MESH = dict(axes=("data", "fsdp", "model"), shape=(2, 2, 2))
# Unlike the defaults: embed not split over fsdp, MLPs over fsdp instead of model, batch over data only.
DALLE_RULES = (("embed", None), ("mlp", "fsdp"), ("batch", "data"))
# Conv outputs over fsdp instead of model, the codebook over data.
VQGAN_RULES = (("conv_out", "fsdp"), ("codebook", "data"), ("batch", "data"))


def _specs(arrays) -> dict:
    return {path: a.sharding.spec for path, a in sharding.to_mapping(arrays).items()}


def _default_specs(params, param_rules, mesh) -> dict:
    shardings = sharding.param_shardings(params, param_rules, sharding.DEFAULT_LOGICAL_RULES, mesh)
    return {path: s.spec for path, s in sharding.to_mapping(shardings).items()}


class _RecordingDalle(DalleTask):
    """Keeps the specs of the trained params as the loop placed them."""

    def export_params(self, state):
        self.trained = _specs(state["params"])
        return super().export_params(state)


class _RecordingVQGAN(VQGANTask):
    def export_params(self, state):
        self.trained = _specs(state["gen_params"])
        return super().export_params(state)


@pytest.fixture(scope="module")
def dalle_run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rules"))
    cfg = tiny_pipeline.tiny_config(root)
    cfg.train.num_steps = 2
    cfg.mesh.shape = MESH["shape"]
    cfg.mesh.logical_rules = DALLE_RULES
    cfg = config_lib.validate(cfg)
    task = _RecordingDalle(cfg)
    workdir = os.path.join(root, "run")
    assert loop.train(cfg, workdir, task).status == "done"
    return task, workdir


def test_generator_places_params_as_training_did(dalle_run):
    task, workdir = dalle_run
    assert checkpoint.read_config(os.path.join(workdir, "model")).mesh.logical_rules == DALLE_RULES
    mesh = sharding.make_mesh(MESH["axes"], MESH["shape"])
    gen = generation.Generator.from_checkpoint(workdir, mesh=mesh)
    assert _specs(gen.params) == task.trained
    # The custom rules really move params: the defaults would lay some out differently.
    default = _default_specs(gen.params, gen.model.partition_rules, mesh)
    assert any(default[k] != v for k, v in task.trained.items())
    assert gen.rows_multiple == 2  # batch over data only
    codes = gen.codes(["a red circle"], num_images=1, seed=0, top_k=8)
    assert codes.shape == (1, gen.model.image_length) and codes.max() < gen.model.image_vocab_size


def test_vqgan_encode_places_params_as_training_did(tmp_path):
    c = ConfigDict()
    c.name = "vqgan_rules"
    c.model = ConfigDict(dict(kind="vqgan", resolution=16, ch=8, ch_mult=(1,), num_res_blocks=1,
                              attn_resolutions=(), z_channels=8, n_embed=32, embed_dim=4, norm_groups=4))
    c.mesh = ConfigDict({**MESH, "logical_rules": VQGAN_RULES})
    c.train = ConfigDict(dict(batch_size=8, num_steps=1, log_every=1, checkpoint_every=100, progress_bar=False,
                              eval_every=0))
    c.train.schedule = ConfigDict(dict(name="constant", warmup_steps=0))
    c.vqgan_loss = ConfigDict(dict(disc_start=1000, disc_ndf=8, disc_num_layers=1, summary_images=0))
    cfg = config_lib.validate(c)
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    task = _RecordingVQGAN(cfg, train_iterator_fn=lambda pi, pc: ArrayImageIterator(images, 8, 0, pi, pc))
    assert loop.train(cfg, str(tmp_path), task).status == "done"
    model_dir = str(tmp_path / "model")
    assert checkpoint.read_config(model_dir).mesh.logical_rules == VQGAN_RULES

    mesh = sharding.make_mesh(MESH["axes"], MESH["shape"])
    tok = VQGANTokenizer.from_checkpoint(model_dir, mesh=mesh)
    assert _specs(tok.params) == task.trained
    default = _default_specs(tok.params, sharding.get_partition_rules("vqgan"), mesh)
    assert any(default[k] != v for k, v in task.trained.items())
    assert sharding.row_multiple(tok.mesh, tok.rules) == 2
    codes = tok.encode(images[:3])  # 3 rows: padded to the 2 batch shards and cut back
    assert codes.shape == (3, 16, 16) and codes.dtype == np.int32
    one = VQGANTokenizer.from_checkpoint(model_dir, mesh=sharding.make_mesh(("data",), (1,), jax.devices()[:1]))
    np.testing.assert_array_equal(one.encode(images[:3]), codes)
