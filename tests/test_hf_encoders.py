"""Pretrained Hugging Face text encoders (`model.encoder_init` = a BART / BERT / RoBERTa directory): on the
fixtures of tools/make_hf_encoder_fixtures.py (tiny random models saved by transformers, with its hidden states),
our converted encoder computes transformers' function; a frozen one stays bit-identical through training; a run
whose model section does not describe the encoder is refused with the keys to set and every misfit param."""
# bazel: manual  (trains a few steps: `make test` runs it with pytest; Bazel runs the fast tests)

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle import config as config_lib
from dalle import model_dir as checkpoint
from dalle import sharding
from dalle.modeling import hf_encoders
from dalle.modeling import model as model_lib
from dalle.train import loop
from dalle.train.tasks.dalle import DalleTask
from tests import tiny_pipeline

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf_encoders")
KINDS = ("bart", "bert", "roberta")


def _dir(kind: str) -> str:
    return os.path.join(FIXTURES, kind)


def _golden(kind: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(_dir(kind), "golden.npz")) as z:
        return {k: z[k] for k in z.files}


def _our_ids(kind: str, hf_ids: np.ndarray) -> np.ndarray:
    """HF ids -> ours: pad is 0 here, so the source's pad id and 0 trade places (as the converter's rows do)."""
    pad = int(hf_encoders.read_config(_dir(kind)).get("pad_token_id") or 0)
    return np.where(hf_ids == pad, 0, np.where(hf_ids == 0, pad, hf_ids))


def _model_section(kind: str, **extra) -> config_lib.ConfigDict:
    return config_lib.ConfigDict({
        "kind": "dalle_bart", "decoder_layers": 1, "decoder_attention_heads": 2, "decoder_ffn_dim": 16,
        "image_vocab_size": 8, "max_text_length": 12, "image_length": 4, **hf_encoders.model_overrides(_dir(kind)),
        **extra})


def _encoder_targets(model) -> dict[str, tuple[int, ...]]:
    abstract = sharding.to_mapping(jax.eval_shape(model.init, jax.random.PRNGKey(0)))
    return {k: tuple(v.shape) for k, v in abstract.items() if model.encoder_param_filter(k)}


def _with(params: dict, flat: dict) -> dict:
    """Haiku params with the flat {module/param: array} entries of `flat` put in."""
    out = {m: dict(leaves) for m, leaves in params.items()}
    for k, v in flat.items():
        module, _, leaf = k.rpartition("/")
        assert leaf in out[module], k
        out[module][leaf] = jnp.asarray(v)
    return out


@pytest.mark.parametrize("kind,scan", [("bart", True), ("bert", True), ("roberta", True), ("bart", False),
                                       ("roberta", False)])
def test_the_converted_encoder_computes_transformers_hidden_states(kind, scan):
    model = model_lib.build_model(_model_section(kind, scan_layers=scan))
    converted = hf_encoders.load_encoder(_dir(kind), model.config, _encoder_targets(model))
    params = _with(model_lib.random_params(model), converted)
    golden = _golden(kind)
    hidden, mask = model.apply(params, "encode", jnp.asarray(_our_ids(kind, golden["input_ids"])))
    valid = golden["attention_mask"].astype(bool)
    assert not valid.all() and valid.any(axis=1).all()  # the fixture has padded and full captions
    np.testing.assert_array_equal(np.asarray(mask), valid)
    diff = np.abs(np.asarray(hidden) - golden["hidden"])
    print(f"{kind} (scan={scan}): max |ours - transformers| = {diff[valid].max():.2e} over the caption tokens")
    assert diff[valid].max() < 1e-4
    if kind != "roberta":  # RoBERTa gives padding its own position row; their outputs are masked everywhere
        assert diff.max() < 1e-4


def test_every_switch_matters():
    """BERT's eps and activation change its function: a model section that leaves either at the dalle-mini default
    is at least 10x further from transformers than the right one (the eps only shows below the 1e-4 tolerance)."""
    golden = _golden("bert")
    valid = golden["attention_mask"].astype(bool)
    ids = jnp.asarray(_our_ids("bert", golden["input_ids"]))

    def error(**extra) -> float:
        model = model_lib.build_model(_model_section("bert", **extra))
        weights = hf_encoders.convert_params(hf_encoders.read_weights(_dir("bert")),
                                             hf_encoders.read_config(_dir("bert")), model.max_text_length)
        hidden, _ = model.apply(_with(model_lib.random_params(model), weights), "encode", ids)
        return float(np.abs(np.asarray(hidden) - golden["hidden"])[valid].max())

    right = error()
    for key, value in [("encoder_layer_norm_eps", 1e-5), ("encoder_activation_function", "gelu_new")]:
        assert error(**{key: value}) > 10 * right, key


def _torch_state(kind: str) -> dict[str, np.ndarray]:
    """The fixture's weights as transformers' PyTorch models save them: dotted names, [out, in] Linear weights,
    `weight` for norm scales and embeddings, BART's tied `encoder.embed_tokens.weight` copy of `shared.weight`, and
    BERT's / RoBERTa's int64 `embeddings.position_ids` buffer (saved until transformers 4.31)."""
    out = {}
    for key, value in hf_encoders.read_weights(_dir(kind)).items():
        path, _, leaf = key.rpartition("/")
        name = path.replace("/", ".")
        if leaf == "kernel":
            out[f"{name}.weight"] = np.ascontiguousarray(value.T)
        else:
            out[f"{name}.{'weight' if leaf in ('scale', 'embedding') else leaf}"] = value
    if kind == "bart":
        out["encoder.embed_tokens.weight"] = out["shared.weight"].copy()
    else:
        rows = int(hf_encoders.read_config(_dir(kind))["max_position_embeddings"])
        out["embeddings.position_ids"] = np.arange(rows, dtype=np.int64)[None]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_pytorch_names_map_to_the_flax_layout(kind):
    """A safetensors file holds PyTorch names and [out, in] Linear weights: renamed, it is the msgpack's tree."""
    flax = hf_encoders.read_weights(_dir(kind))
    torch = {k: v for k, v in _torch_state(kind).items()
             if k not in ("encoder.embed_tokens.weight", "embeddings.position_ids")}  # not in the msgpack
    back = hf_encoders.torch_to_flax_names(torch)
    assert back.keys() == flax.keys()
    for k in flax:
        np.testing.assert_array_equal(back[k], flax[k], err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_a_safetensors_directory_converts_to_the_msgpack_params(kind, tmp_path):
    """DIR with config.json and model.safetensors in PyTorch naming (no msgpack) is an encoder directory whose
    converted params are exactly the msgpack's: same names, shapes, dtypes and bits."""
    from safetensors.numpy import save_file

    shutil.copy(os.path.join(_dir(kind), "config.json"), tmp_path)
    save_file(_torch_state(kind), str(tmp_path / hf_encoders.SAFETENSORS))
    hf = hf_encoders.read_config(str(tmp_path))
    assert hf is not None and hf_encoders.is_hf_encoder_dir(str(tmp_path))
    want = hf_encoders.convert_params(hf_encoders.read_weights(_dir(kind)), hf, 12)
    got = hf_encoders.convert_params(hf_encoders.read_weights(str(tmp_path)), hf, 12)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype == np.float32, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    model = model_lib.build_model(_model_section(kind))
    loaded = hf_encoders.load_encoder(str(tmp_path), model.config, _encoder_targets(model))
    assert loaded.keys() == want.keys()


def test_bert_tokenizer_and_encoder_give_transformers_hidden_states_for_raw_captions():
    """End to end from strings: the BERT directory as data.tokenizer_path (dalle.tokenizers.wordpiece, through
    dalle's caption encoder) and as model.encoder_init gives transformers' BertTokenizer + FlaxBertModel hidden
    states for raw captions (case, accents, CJK, unknown words, truncation, the empty caption)."""
    from dalle.data import tasks
    from dalle.data import text as text_lib
    from dalle.tokenizers import sentencepiece as tokenizer_lib

    with np.load(os.path.join(_dir("bert"), "wordpiece.npz")) as z:
        ref = {k: z[k] for k in z.files}
    vocab = tokenizer_lib.load_vocabulary(_dir("bert"))
    model = model_lib.build_model(_model_section("bert"))
    ids = tasks.encode_captions([str(c) for c in ref["captions"]], vocab, model.max_text_length,
                                text_lib.NormalizerOptions(normalizer="none"))
    np.testing.assert_array_equal(ids, ref["input_ids"])
    params = _with(model_lib.random_params(model),
                   hf_encoders.load_encoder(_dir("bert"), model.config, _encoder_targets(model)))
    hidden, mask = model.apply(params, "encode", jnp.asarray(ids))
    np.testing.assert_array_equal(np.asarray(mask), ref["attention_mask"].astype(bool))
    diff = np.abs(np.asarray(hidden) - ref["hidden"])
    print(f"bert from raw captions: max |ours - transformers| = {diff.max():.2e}")
    assert diff.max() < 1e-4


@pytest.mark.parametrize("kind", ["bart", "roberta"])
def test_the_byte_level_bpe_tokenizer_gives_transformers_ids(kind):
    """BART's and RoBERTa's tokenizer directories are usable as data.tokenizer_path (dalle.tokenizers.bart_bpe):
    our caption ids are transformers' with pad and 0 swapped."""
    from dalle.tokenizers import sentencepiece as tokenizer_lib

    vocab = tokenizer_lib.load_vocabulary(_dir(kind))
    golden = _golden(kind)
    want = _our_ids(kind, golden["input_ids"])
    for caption, row in zip(golden["captions"], want):
        # dalle's caption encoder: truncate to max_text_length - 1, append EOS (dalle.data.tasks)
        ids = list(vocab.encode(str(caption)))[:len(row) - 1] + [vocab.eos_id]
        assert ids == [int(i) for i in row if i != 0], caption


def test_the_overrides_printed_for_a_directory_make_a_fitting_model_section(capsys):
    assert hf_encoders.main([_dir("roberta")]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert second == "# and model.max_text_length <= 18"  # 20 rows from pad_token_id + 1 = 2 on
    section = config_lib.ConfigDict({"model": _model_section("bart")})  # another encoder's section ...
    config_lib.apply_overrides(section, [a[len("--config."):] for a in first.split()])  # ... set to RoBERTa's
    hf = hf_encoders.read_config(_dir("roberta"))
    assert hf_encoders.model_section_problems(model_lib.complete_config(section.model), hf) == []


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_pipeline.tiny_config(str(tmp_path_factory.mktemp("pipe")), kind="dalle_bart")


def _start(cfg):
    """The params a new run starts from, exactly as the loop makes them."""
    task = DalleTask(cfg)
    state = task.load_pretrained(jax.jit(task.init_state)(jax.random.split(jax.random.PRNGKey(cfg.seed))[0]))
    return task, sharding.to_mapping(jax.device_get(state["params"]))


def test_a_frozen_pretrained_bert_encoder_stays_bit_identical_through_training(base, tmp_path):
    cfg = base.copy_and_resolve_references()
    for k, v in hf_encoders.model_overrides(_dir("bert")).items():
        cfg.model[k] = v
    cfg.model.encoder_init = _dir("bert")
    cfg.train.num_steps = 2
    cfg.train.freeze_encoder = True
    cfg = config_lib.validate(cfg)
    task, start = _start(cfg)
    converted = hf_encoders.load_encoder(_dir("bert"), cfg.model, _encoder_targets(task.model))
    assert "dalle_bart/encoder/embed_token_types/embedding" in converted
    assert set(converted) == {k for k in start if task.model.encoder_param_filter(k)}
    for k, v in converted.items():
        np.testing.assert_array_equal(start[k], v, err_msg=k)
    loop.train(cfg, str(tmp_path / "ft"), task)
    final = sharding.to_mapping(checkpoint.load_model(str(tmp_path / "ft"))[1])
    for k, v in converted.items():
        np.testing.assert_array_equal(final[k], v, err_msg=k)
    assert any(not np.array_equal(final[k], start[k]) for k in final if k not in converted)  # the decoder trained


def test_a_model_section_that_does_not_fit_is_refused_with_the_keys_and_every_param(base):
    cfg = base.copy_and_resolve_references()  # the tiny dalle-mini-style encoder: 1 layer, FFN 64, GLU, pre-norms
    cfg.model.encoder_init = _dir("roberta")
    with pytest.raises(ValueError) as e:
        _start(config_lib.validate(cfg))
    msg = str(e.value)
    assert msg.startswith(f"model.encoder_init = {_dir('roberta')!r} (a Hugging Face roberta encoder) does not fit")
    for line in ("set model.encoder_layers = 2 (now 1)", "set model.encoder_ffn_dim = 48 (now 64)",
                 "set model.encoder_ln_positions = 'postln' (now None)", "set model.encoder_use_bias = True (now None)",
                 "set model.encoder_vocab_size = 300 (now 64)", "set model.encoder_token_types = 1 (now 0)"):
        assert f"\n  {line}\n" in msg, line
    assert "dalle_bart/encoder/embed_tokens/embedding: (300, 32) != expected (64, 32)" in msg
    assert "dalle_bart/encoder/layers/layer/ffn/wi_0/kernel: (2, 32, 48) != expected (1, 32, 64)" in msg
    assert "missing params (" in msg and "dalle_bart/encoder/layers/layer/ffn/wi_1/kernel" in msg  # GLU here
    assert "unexpected params (" in msg and "dalle_bart/encoder/embed_token_types/embedding" in msg


def test_a_config_without_pad_token_id_gets_transformers_default_everywhere():
    """The position offset and the embedding-row swap read one pad id: transformers' default for the kind when
    config.json leaves it out (BART and RoBERTa 1, BERT 0), never 0 for one and 1 for the other."""
    for kind, pad, offset in (("bart", 1, 2), ("roberta", 1, 2), ("bert", 0, 0)):
        hf = {"model_type": kind}
        assert (hf_encoders.pad_id(hf), hf_encoders.position_offset(hf)) == (pad, offset), kind
    assert hf_encoders.pad_id({"model_type": "roberta", "pad_token_id": 3}) == 3
    assert hf_encoders.position_offset({"model_type": "roberta", "pad_token_id": 3}) == 4
