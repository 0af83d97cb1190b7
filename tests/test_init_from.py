"""Whole-model fine-tuning (`model.init_from`) through the real loop on the tiny encoded shapes data: the fresh
state holds every parameter of the source model, training from it beats random init, it composes with
`train.freeze_encoder`, `train.embeddings_only` and `model.encoder_init`, and a model that does not fit is refused
with every offending parameter listed."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import json
import os

import jax
import numpy as np
import pytest

from dalle import cli
from dalle import config as config_lib
from dalle import model_dir as checkpoint
from dalle import sharding
from dalle.train import loop
from dalle.train.tasks.dalle import DalleTask
from tests import published_layouts as layouts
from tests import tiny_pipeline

FINETUNE_STEPS = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_pipeline.tiny_config(str(tmp_path_factory.mktemp("pipe")), kind="dalle_bart")


def _variant(config, *, model=None, **train):
    c = config.copy_and_resolve_references()
    for k, v in (model or {}).items():
        c.model[k] = v
    for k, v in train.items():
        c.train[k] = v
    return config_lib.validate(c)


@pytest.fixture(scope="module")
def source(base, tmp_path_factory):
    """A trainer workdir of the tiny model trained 40 steps: the model to fine-tune."""
    workdir = str(tmp_path_factory.mktemp("source"))
    cfg = _variant(base, num_steps=40)
    cfg.train.optimizer.lr = 3e-3
    assert loop.train(cfg, workdir, DalleTask(cfg)).status == "done"
    return workdir


def _losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["train/loss"] for line in f if "train/loss" in line]


def _start(cfg):
    """The params a new run starts from, exactly as the loop makes them."""
    task = DalleTask(cfg)
    init_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]  # the loop's init key
    state = task.load_pretrained(jax.jit(task.init_state)(init_rng))
    return task, sharding.to_mapping(jax.device_get(state["params"]))


def _assert_same(got, want, keys):
    assert keys
    for k in keys:
        assert np.array_equal(np.asarray(got[k]), np.asarray(want[k])), k


def test_fine_tuning_starts_from_the_source_and_beats_random_init(base, source, tmp_path):
    src = sharding.to_mapping(checkpoint.load_model(source)[1])
    tuned = _variant(base, model={"init_from": source}, num_steps=FINETUNE_STEPS)
    _, start = _start(tuned)
    assert start.keys() == src.keys()
    _assert_same(start, src, list(src))  # step 0: every param is the source model's
    loop.train(tuned, str(tmp_path / "tuned"), DalleTask(tuned))
    scratch = _variant(base, num_steps=FINETUNE_STEPS)
    loop.train(scratch, str(tmp_path / "scratch"), DalleTask(scratch))
    tuned_losses, scratch_losses = _losses(tmp_path / "tuned"), _losses(tmp_path / "scratch")
    print(f"train/loss per step, fine-tuned from the source: {tuned_losses}; from random init: {scratch_losses}")
    assert len(tuned_losses) == len(scratch_losses) == FINETUNE_STEPS
    assert tuned_losses[-1] < scratch_losses[-1], (tuned_losses, scratch_losses)
    # The exported fine-tuned model moved away from the source (it trained).
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path / "tuned"))[1])
    assert any(not np.array_equal(final[k], src[k]) for k in src)


def test_embeddings_only_and_encoder_init_compose_with_init_from(base, source, tmp_path):
    src = sharding.to_mapping(checkpoint.load_model(source)[1])
    donor_task = DalleTask(base)
    donor = jax.device_get(donor_task.init_state(jax.random.PRNGKey(42)))["params"]
    checkpoint.save_model(str(tmp_path / "donor"), donor, base)
    donor = sharding.to_mapping(donor)

    both = _variant(base, model={"init_from": source, "encoder_init": str(tmp_path / "donor")})
    task, start = _start(both)
    encoder = [k for k in start if task.model.encoder_param_filter(k)]
    rest = [k for k in start if not task.model.encoder_param_filter(k)]
    _assert_same(start, donor, encoder)  # encoder_init wins on the encoder ...
    _assert_same(start, src, rest)  # ... init_from gives the rest

    cfg = _variant(base, model={"init_from": source}, num_steps=2, embeddings_only=True)
    task = DalleTask(cfg)
    loop.train(cfg, str(tmp_path / "emb"), task)
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path / "emb"))[1])
    frozen = [k for k in final if not task.model.embedding_param_filter(k)]
    _assert_same(final, src, frozen)  # everything but the embeddings is still the source's
    assert any(not np.array_equal(final[k], src[k]) for k in final if task.model.embedding_param_filter(k))


def test_fine_tuning_a_converted_dalle_mini_model_with_a_frozen_encoder(base, tmp_path, capsys):
    """`dalle convert dalle-mini --weights-only` output, sized for the shapes data, fine-tuned with its model
    section: step 0 is the converted model, and the frozen encoder stays bit-identical."""
    src = layouts.tiny_dalle_mini(str(tmp_path / "dm"), vqgan_place="none", image_length=base.model.image_length,
                                  codes=tiny_pipeline.CODES, max_text_length=base.model.max_text_length,
                                  encoder_vocab_size=base.model.encoder_vocab_size)
    out = str(tmp_path / "converted")
    assert cli.main(["convert", "dalle-mini", "--from", src, "--out", out, "--weights-only"]) == 0, \
        capsys.readouterr().err
    converted = sharding.to_mapping(checkpoint.load_model(out)[1])
    cfg = base.copy_and_resolve_references()
    cfg.model = checkpoint.read_config(out).model
    cfg.model.init_from = out
    cfg.train.num_steps = 2
    cfg.train.freeze_encoder = True
    cfg = config_lib.validate(cfg)
    task, start = _start(cfg)
    _assert_same(start, converted, list(converted))
    loop.train(cfg, str(tmp_path / "ft"), task)
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path / "ft"))[1])
    _assert_same(final, converted, [k for k in final if task.model.encoder_param_filter(k)])
    assert any(not np.array_equal(final[k], converted[k]) for k in final if not task.model.encoder_param_filter(k))


def test_a_source_that_does_not_fit_is_refused_with_every_mismatch_listed(base, source, tmp_path):
    deeper = _variant(base, model={"decoder_layers": 3, "decoder_ffn_dim": 32, "init_from": source})
    with pytest.raises(ValueError) as e:
        _start(deeper)
    msg = str(e.value)
    assert msg.startswith(f"model.init_from = {source!r} does not fit this model")
    assert "model.decoder_layers: 2 there, 3 here" in msg and "model.decoder_ffn_dim: 64 there, 32 here" in msg
    lines = msg.splitlines()[1:]
    src = sharding.to_mapping(checkpoint.load_model(source)[1])
    stacked = [k for k in src if "decoder/layers/" in k]
    assert len(lines) == len(stacked)  # one line per decoder layer param: every one has another shape
    assert any("ffn/wi_0/kernel: (2, 32, 64) there, (3, 32, 32) here" in line for line in lines)

    other_kind = base.copy_and_resolve_references()
    other_kind.model = config_lib.ConfigDict(dict(
        kind="decoder_only", d_model=32, num_layers=2, num_heads=2, ffn_dim=64, use_glu=False, text_vocab_size=64,
        image_vocab_size=tiny_pipeline.CODES, max_text_length=base.model.max_text_length, image_length=64,
        init_from=source))
    with pytest.raises(ValueError) as e:
        _start(config_lib.validate(other_kind))
    msg = str(e.value)
    assert "model.kind: 'dalle_bart' there, 'decoder_only' here" in msg
    assert "\n  missing decoder_only/" in msg and "\n  unexpected dalle_bart/" in msg

    missing = _variant(base, model={"init_from": str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match="model.init_from = .*nowhere' does not exist"):
        _start(missing)
