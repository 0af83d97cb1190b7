"""`dalle export dalle-mini`: the inverse of `dalle convert dalle-mini`. Exporting a converted golden fixture (made
by the real dalle-mini package, tools/make_dalle_mini_fixtures.py) gives back dalle-mini's own parameter tree and
config; the other layout converts back to the same parameters and the fixture's logits; what dalle-mini cannot
express is refused by name."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from ml_collections import ConfigDict

from dalle import cli
from dalle import model_dir as checkpoint
from dalle.modeling import convert_dalle_mini as conv
from dalle.modeling import export_dalle_mini as export
from dalle.modeling import model as model_lib
from tests.published_layouts import CAPTIONS, FIXTURES, load_fixture, write_dalle_mini_dir
from tests.test_convert_dalle_mini import our_text

IDS = [os.path.basename(p)[11:-4] for p in FIXTURES]
# The config.json keys that decide the model dalle-mini builds.
ARCHITECTURE_KEYS = sorted(set(conv._COPIED) | {"activation_function", "image_vocab_size", "decoder_start_token_id",
                                                "bos_token_id", "eos_token_id", "pad_token_id", "use_scan",
                                                "is_encoder_decoder", "tie_word_embeddings", "use_alibi"})


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_export_of_a_converted_fixture_is_dalle_minis_own_tree(path):
    _, config, flat = load_fixture(path)
    cfg, params = conv.convert(config, flat)
    scanned = bool(config["use_scan"])
    exported = export.export_params(jax.device_get(params), cfg, scanned=scanned)
    assert sorted(exported) == sorted(flat)
    for key in flat:
        assert exported[key].shape == flat[key].shape, key
        np.testing.assert_array_equal(exported[key], flat[key], err_msg=key)
    config_json = export.dalle_mini_config(cfg, scanned=scanned)
    for key in ARCHITECTURE_KEYS:
        assert config_json[key] == config[key], key


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_the_other_layout_converts_back_to_the_same_model(path):
    z, config, flat = load_fixture(path)
    cfg, params = conv.convert(config, flat)
    params = jax.device_get(params)
    other = not config["use_scan"]
    config_json = export.dalle_mini_config(cfg, scanned=other)
    again_cfg, again = conv.convert(config_json, export.export_params(params, cfg, scanned=other))
    assert again_cfg.to_dict() == cfg.to_dict()
    for module, leaves in params.items():
        for name, value in leaves.items():
            np.testing.assert_array_equal(np.asarray(again[module][name]), np.asarray(value), f"{module}/{name}")
    model = model_lib.build_model(again_cfg)
    logits = jax.jit(model.full_logits)(again, our_text(z["input_ids"], z["attention_mask"]),
                                        jnp.asarray(z["decoder_input_ids"]))
    np.testing.assert_allclose(np.asarray(logits), z["logits"], atol=1e-4, rtol=0)


def test_cli_exports_weights_config_and_tokenizer(tmp_path, capsys):
    from dalle.tokenizers import bart_bpe

    _, config, flat = load_fixture("normformer")
    config = {**config, "normalize_text": True}  # its TextNormalizer: recorded by the import, written back
    src = write_dalle_mini_dir(str(tmp_path / "dm"), config, flat)
    bart_bpe.train_tiny_bpe(CAPTIONS, src, vocab_size=300)
    converted = str(tmp_path / "converted")
    assert cli.main(["convert", "dalle-mini", "--from", src, "--out", converted, "--weights-only"]) == 0
    out = tmp_path / "exported"
    assert cli.main(["export", "dalle-mini", "--checkpoint", converted, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scanned layout" in printed and "tokenizer" in printed
    assert sorted(conv.tokenizer_files(str(out))) == sorted(conv.tokenizer_files(src))
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["use_scan"] is True and config_json["model_type"] == "dallebart"
    assert checkpoint.read_config(converted).data.text_normalizer == "dalle_mini"
    assert config_json["normalize_text"] is True
    tree = serialization.msgpack_restore((out / "flax_model.msgpack").read_bytes())
    exported = _flatten(tree)
    assert sorted(exported) == sorted(flat)
    assert all(np.array_equal(exported[k], flat[k]) for k in flat)
    assert not list(out.glob("*.partial"))
    # And dalle reads the export as the dalle-mini directory it is.
    loaded = conv.load(str(out), weights_only=True)
    original = checkpoint.load_model(converted)[1]
    for module, leaves in original.items():
        for name, value in leaves.items():
            np.testing.assert_array_equal(loaded.params[module][name], np.asarray(value))


def test_unscanned_export_refuses_to_drop_trained_values():
    _, config, flat = load_fixture("postln_unscanned")
    cfg, params = conv.convert(config, flat)
    params = jax.device_get(params)
    key = "dalle_bart/encoder/layers/layer/output_norm"
    params[key]["scale"] = np.array(params[key]["scale"])
    params[key]["scale"][-1] += 0.5  # the last post-LN norm has no scale in dalle-mini's unscanned layers
    with pytest.raises(conv.ConversionError, match="output_norm/scale of layer 1 holds trained values"):
        export.export_params(params, cfg, scanned=False)
    export.export_params(params, cfg, scanned=True)  # the scanned layout keeps every layer's scale


def test_what_dalle_mini_cannot_express_is_refused_by_name(tmp_path, capsys):
    _, config, flat = load_fixture("normformer")
    cfg, _ = conv.convert(config, flat)
    for change, needle in [({"kind": "decoder_only"}, "model.kind = 'decoder_only'"),
                           ({"activation_function": "quick_gelu"}, "activation_function = 'quick_gelu'")]:
        bad = ConfigDict(cfg.to_dict())
        bad.update(change)
        with pytest.raises(conv.ConversionError, match=needle):
            export.dalle_mini_config(bad)
    assert cli.main(["export", "dalle-mini", "--checkpoint", str(tmp_path / "nothing"), "--out",
                     str(tmp_path / "o")]) == 2
    assert "dalle export dalle-mini:" in capsys.readouterr().err
    assert cli.main(["export", "nope"]) == 2


def test_a_sentencepiece_model_is_exported_without_a_tokenizer(tmp_path, capsys):
    _, config, flat = load_fixture("normformer")
    cfg, params = conv.convert(config, flat)
    spm = tmp_path / "spm.model"
    spm.write_bytes(b"not read")
    model_dir = checkpoint.save_model(str(tmp_path / "m"), jax.device_get(params),
                                      ConfigDict({"model": cfg.to_dict(), "data": {"tokenizer_path": str(spm)}}))
    assert cli.main(["export", "dalle-mini", "--checkpoint", model_dir, "--out", str(tmp_path / "e")]) == 0
    assert "no tokenizer" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "e")) == ["config.json", "flax_model.msgpack"]


def test_export_writes_into_a_bucket(tmp_path, fake_bucket):
    """The export goes through the path layer: `--out gs://...` reaches the bucket (tests/conftest.py fakes it)."""
    _, config, flat = load_fixture("normformer")
    src = write_dalle_mini_dir(str(tmp_path / "dm"), config, flat)
    converted = str(tmp_path / "converted")
    assert cli.main(["convert", "dalle-mini", "--from", src, "--out", converted, "--weights-only"]) == 0
    assert cli.main(["export", "dalle-mini", "--checkpoint", converted, "--out", "gs://bucket/exported"]) == 0
    out = fake_bucket / "exported"
    assert json.loads((out / "config.json").read_text())["model_type"] == "dallebart"
    exported = _flatten(serialization.msgpack_restore((out / "flax_model.msgpack").read_bytes()))
    assert sorted(exported) == sorted(flat) and all(np.array_equal(exported[k], flat[k]) for k in flat)
    assert sorted(os.listdir(out)) == ["config.json", "flax_model.msgpack"]
