"""The text-to-image training task through the real loop, on a tiny encoded shapes dataset."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)


import jax
import ml_collections
import numpy as np
import pytest

from dalle import sharding
from dalle import model_dir as checkpoint
from dalle.train import loop
from dalle.train.tasks.dalle import DalleTask
from tests import tiny_pipeline


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_pipeline.tiny_config(str(tmp_path_factory.mktemp("pipe")))


def _with(config, **train):
    c = config.copy_and_resolve_references()
    for k, v in train.items():
        c.train[k] = v
    return c


def test_trains_and_exports(base, tmp_path):
    cfg = _with(base, num_steps=8)
    cfg.train.optimizer.lr = 3e-3
    result = loop.train(cfg, str(tmp_path), DalleTask(cfg))
    assert result.status == "done"
    import json
    losses = [json.loads(line)["train/loss"] for line in open(tmp_path / "metrics.jsonl") if "train/loss" in line]
    assert len(losses) == 8 and losses[-1] < losses[0]
    saved_config, params = checkpoint.load_model(str(tmp_path))
    assert saved_config.model.kind == "decoder_only" and saved_config.data.vqgan_checkpoint
    assert sum(np.size(x) for x in jax.tree_util.tree_leaves(params)) > 1000


def test_export_saves_the_sampling_section(base, tmp_path):
    """Every exported model carries a complete `sampling` section (the schema's defaults when the training config
    has none), and generation reads it back from the model directory."""
    from dalle import config as config_lib
    from dalle import generation, sampling_schema

    task = DalleTask(base)
    params = jax.device_get(task.init_state(jax.random.PRNGKey(0)))["params"]
    _, exported = task.export_params({"params": params})
    assert exported.sampling.to_dict() == sampling_schema.sampling_defaults().to_dict()
    cfg = base.copy_and_resolve_references()
    cfg.sampling = ml_collections.ConfigDict(dict(guidance=1.5, temperature=0.7, top_k=8))
    cfg = config_lib.validate(cfg)
    _, exported = DalleTask(cfg).export_params({"params": params})
    assert exported.sampling.to_dict() == {**sampling_schema.sampling_defaults().to_dict(), "guidance": 1.5,
                                           "temperature": 0.7, "top_k": 8}
    saved = checkpoint.save_model(str(tmp_path / "model"), params, exported)
    assert checkpoint.read_config(saved).sampling.guidance == 1.5
    gen = generation.Generator.from_checkpoint(saved)
    assert (gen.sampling.guidance, gen.sampling.temperature, gen.sampling.top_k) == (1.5, 0.7, 8)


def test_grad_accumulation_matches_full_batch(base):
    full = DalleTask(_with(base, grad_accum_steps=1))
    accum = DalleTask(_with(base, grad_accum_steps=4))
    state = full.init_state(jax.random.PRNGKey(0))
    batch = next(full.train_data(0, 1))
    batch = {k: v for k, v in batch.items() if k in ("text_tokens", "image_tokens")}
    rng = jax.random.PRNGKey(1)
    s1, m1 = jax.jit(full.train_step)(state, batch, rng)
    s2, m2 = jax.jit(accum.train_step)(state, batch, rng)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s1["params"]), jax.tree_util.tree_leaves(s2["params"])):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.fixture(scope="module")
def bart(base):
    from dalle import config as config_lib

    c = base.copy_and_resolve_references()
    c.model = ml_collections.ConfigDict(dict(
        kind="dalle_bart", d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_vocab_size=64,
        image_vocab_size=tiny_pipeline.CODES, max_text_length=base.model.max_text_length, image_length=64))
    return config_lib.validate(c)


def test_freeze_encoder_leaves_encoder_bit_identical(bart, tmp_path):
    cfg = _with(bart, freeze_encoder=True)
    task = DalleTask(cfg)
    init_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[0]  # the loop's init key
    init = sharding.to_mapping(jax.device_get(jax.jit(task.init_state)(init_rng))["params"])
    loop.train(cfg, str(tmp_path), task)
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path))[1])
    enc = [k for k in final if task.model.encoder_param_filter(k)]
    dec = [k for k in final if not task.model.encoder_param_filter(k)]
    assert enc and dec
    for k in enc:
        assert np.array_equal(final[k], init[k]), k
    assert any(not np.array_equal(final[k], init[k]) for k in dec)


def test_encoder_init_copies_the_encoder(bart, tmp_path):
    src = DalleTask(bart)
    donor = jax.device_get(src.init_state(jax.random.PRNGKey(42)))["params"]
    checkpoint.save_model(str(tmp_path / "donor"), donor, bart)
    cfg = bart.copy_and_resolve_references()
    cfg.model.encoder_init = str(tmp_path / "donor")
    task = DalleTask(cfg)
    state = task.load_pretrained(task.init_state(jax.random.PRNGKey(0)))
    got, want = sharding.to_mapping(state["params"]), sharding.to_mapping(donor)
    fresh = sharding.to_mapping(task.init_state(jax.random.PRNGKey(0))["params"])
    for k in got:
        expected = want[k] if task.model.encoder_param_filter(k) else fresh[k]
        assert np.array_equal(np.asarray(got[k]), np.asarray(expected)), k


def test_dry_run_for_a_sharded_mesh(base):
    cfg = base.copy_and_resolve_references()
    cfg.mesh.shape = (2, 2, 2)
    report = loop.dry_run(cfg, DalleTask(cfg))
    assert report["devices"] == 8 and report["per_device_peak_bytes"] > 0
    assert report["params"] == DalleTask(cfg).model.param_count(
        jax.eval_shape(DalleTask(cfg).model.init, jax.random.PRNGKey(0)))


def test_code_features_hold_the_vqgan_codebook_and_stay_frozen(base, tmp_path):
    """model.image_code_features: the table is the VQGAN's codebook, standardised per dimension, before and after
    training (it is data, not a weight), while the rest of the model trains."""
    from dalle import config as config_lib
    from dalle.train.tasks import dalle as dalle_task

    vq_config, vq_params = checkpoint.load_model(base.data.vqgan_checkpoint)
    codebook = np.asarray(sharding.to_mapping(vq_params)["quantize/embeddings"])
    want = (codebook - codebook.mean(0)) / (codebook.std(0) + 1e-6)
    cfg = _with(base, num_steps=3)
    cfg.model.image_code_features = int(vq_config.model.embed_dim)
    cfg = config_lib.validate(cfg)
    task = DalleTask(cfg)
    init = sharding.to_mapping(jax.device_get(task.load_pretrained(task.init_state(jax.random.PRNGKey(0))))["params"])
    [key] = [k for k in init if dalle_task.is_code_feature_table(k)]
    np.testing.assert_allclose(init[key], want, rtol=1e-5, atol=1e-5)
    loop.train(cfg, str(tmp_path), task)
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path))[1])
    np.testing.assert_allclose(final[key], want, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(final[key.replace("image_code_features", "image_code_out/kernel")],
                              init[key.replace("image_code_features", "image_code_out/kernel")])
    with pytest.raises(ValueError, match="gives .* features"):
        dalle_task.codebook_features(base.data.vqgan_checkpoint, tiny_pipeline.CODES, 3)
    with pytest.raises(ValueError, match="needs data.vqgan_checkpoint"):
        dalle_task.codebook_features("", tiny_pipeline.CODES, 8)


def test_codebook_pixel_features_add_what_the_decoder_draws_for_each_code(base):
    """model.image_code_feature_source = "codebook_pixels": the codebook columns, then the RGB pixels of each code
    drawn alone (centre cell of a 3x3 grid of it), every column standardised."""
    from dalle.modeling.vqgan.api import VQGANTokenizer
    from dalle.train.tasks import dalle as dalle_task

    vq_config, vq_params = checkpoint.load_model(base.data.vqgan_checkpoint)
    dims = int(vq_config.model.embed_dim)
    tok = VQGANTokenizer(vq_params, vq_config)
    f = tok.downsample_factor
    width = dims + 3 * f * f
    table = dalle_task.codebook_features(base.data.vqgan_checkpoint, tiny_pipeline.CODES, width, "codebook_pixels")
    assert table.shape == (tiny_pipeline.CODES, width)
    np.testing.assert_allclose(table[:, :dims], dalle_task.codebook_features(
        base.data.vqgan_checkpoint, tiny_pipeline.CODES, dims), rtol=1e-5, atol=1e-5)
    code = tiny_pipeline.CODES - 1
    pixels = tok.decode(np.full((1, 3, 3), code, np.int32))[0, f:2 * f, f:2 * f].reshape(-1)
    raw = dalle_task.decoded_code_pixels(vq_config, vq_params, tiny_pipeline.CODES, batch=3)
    np.testing.assert_allclose(raw[code], pixels, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table[:, dims:], (raw - raw.mean(0)) / (raw.std(0) + 1e-6), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gives .* features"):
        dalle_task.codebook_features(base.data.vqgan_checkpoint, tiny_pipeline.CODES, dims, "codebook_pixels")
    with pytest.raises(ValueError, match="image_code_feature_source = 'pixels'"):
        dalle_task.codebook_features(base.data.vqgan_checkpoint, tiny_pipeline.CODES, dims, "pixels")


def test_training_writes_image_samples_to_tensorboard(base, tmp_path):
    """train.sample_every: the sample prompts drawn as the exported model would, as TensorBoard images."""
    import glob

    from tensorboard.backend.event_processing import event_accumulator

    cfg = _with(base, num_steps=2, sample_every=2, sample_prompts=("a red circle", "a blue square"))
    loop.train(cfg, str(tmp_path), DalleTask(cfg))
    [events] = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    acc = event_accumulator.EventAccumulator(events, size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "samples" in tags.get("images", []) + tags.get("tensors", [])
