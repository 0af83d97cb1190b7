"""`dalle export dalle-mini`: the inverse of `dalle convert dalle-mini`. Exporting a converted golden fixture (made
by the real dalle-mini package, tools/make_dalle_mini_fixtures.py) gives back dalle-mini's own parameter tree and
config; the other layout converts back to the same parameters and the fixture's logits; what dalle-mini cannot
express is refused by name. And dalle-mini itself loads our exports: tools/make_export_check_fixtures.py ran
`DalleBart.from_pretrained` (and its processor) on exports of models of ours, and its logits are checked here against
ours, on exports that today's exporter must still write byte for byte."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib

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
# Exports of models of ours that dalle-mini loaded (tools/make_export_check_fixtures.py).
EXPORT_CHECKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "fixtures", "export_check_*.npz")))
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
    if other and cfg.ln_positions == "swinv2":  # dalle-mini's config refuses scanned Swin v2: so does the export
        with pytest.raises(conv.ConversionError, match="swinv2' in the scanned layout"):
            export.dalle_mini_config(cfg, scanned=True)
        config_json = dict(export.dalle_mini_config(cfg, scanned=False), use_scan=True)  # the param layout still
    else:                                                                                # round-trips
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


def _rebuild_model_dir(z: np.lib.npyio.NpzFile, directory: str) -> str:
    """The fixture's model dir of ours: its config and params, and its tokenizer files under tokenizer/."""
    params: dict = {}
    for key in z.files:
        if key.startswith("param/"):
            module, _, name = key[len("param/"):].rpartition("/")
            params.setdefault(module, {})[name] = z[key]
    checkpoint.save_model(directory, params, ConfigDict(json.loads(str(z["config_json"]))))
    for key in z.files:
        if key.startswith("tokenizer/"):
            os.makedirs(os.path.join(directory, "tokenizer"), exist_ok=True)
            with open(os.path.join(directory, key), "wb") as f:
                f.write(z[key].tobytes())
    return directory


def _sha256_of_dir(directory: pathlib.Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in sorted(os.listdir(directory))}


def test_export_checks_cover_layouts_and_both_dalle_mini_variants():
    variants, switches = set(), set()
    for path in EXPORT_CHECKS:
        z = np.load(path)
        model = json.loads(str(z["config_json"]))["model"]
        switches.add((model["ln_positions"], model["use_glu"], model["ln_type"]))
        variants |= {k.split("/")[0] for k in z.files if k.endswith("/logits")}
        assert str(z["dalle_mini_version"]) == "0.1.5"
    assert len(switches) >= 2, "run tools/make_export_check_fixtures.py"
    assert variants == {"scanned", "unscanned"}
    assert all(os.path.getsize(p) < 300_000 for p in EXPORT_CHECKS)


@pytest.mark.parametrize("path", EXPORT_CHECKS, ids=[os.path.basename(p)[13:-4] for p in EXPORT_CHECKS])
def test_dalle_mini_loaded_our_export_and_computed_our_logits(path, tmp_path, capsys):
    """The fixture holds what dalle-mini computed from exports of this model; today's exporter must write the same
    bytes (config.json keys are sorted, the msgpack tree follows the params' sorted order: both are reproducible),
    so those logits are still dalle-mini's verdict on today's export."""
    from dalle.tokenizers import bart_bpe

    z = np.load(path)
    model_dir = _rebuild_model_dir(z, str(tmp_path / "ours"))
    variants = sorted(k.split("/")[0] for k in z.files if k.endswith("/logits"))
    for variant in variants:
        out = tmp_path / variant
        flags = ["--unscanned"] if variant == "unscanned" else []
        assert cli.main(["export", "dalle-mini", "--checkpoint", model_dir, "--out", str(out), *flags]) == 0
        assert _sha256_of_dir(out) == json.loads(str(z[f"{variant}/sha256"])), f"{variant} export changed"
    config, params = checkpoint.load_model(model_dir)
    model = model_lib.build_model(config.model)
    logits = jax.jit(model.full_logits)(params, our_text(z["input_ids"], z["attention_mask"]),
                                        jnp.asarray(z["decoder_input_ids"]))
    for variant in variants:
        np.testing.assert_allclose(np.asarray(logits), z[f"{variant}/logits"], atol=1e-4, rtol=0, err_msg=variant)
    if "captions" in z.files:  # dalle-mini's processor on the exported tokenizer = our vocabulary on it
        vocab = bart_bpe.BpeVocabulary(str(tmp_path / variants[0]))
        lt = model.max_text_length
        ids, mask = z[f"{variants[0]}/processor_input_ids"], z[f"{variants[0]}/processor_attention_mask"]
        for b, caption in enumerate(json.loads(str(z["captions"]))):
            ours = (list(vocab.encode(caption))[: lt - 1] + [vocab.eos_id] + [0] * lt)[:lt]
            assert np.asarray(our_text(ids[b], mask[b])).tolist() == ours, caption
        for variant in variants:
            np.testing.assert_array_equal(z[f"{variant}/processor_input_ids"], z["input_ids"])
    if config.model.ln_positions == "swinv2":  # dalle-mini's config asserts "scan cannot be used with 'swinv2'"
        capsys.readouterr()
        assert cli.main(["export", "dalle-mini", "--checkpoint", model_dir, "--out", str(tmp_path / "s")]) == 2
        assert "export with --unscanned" in capsys.readouterr().err
