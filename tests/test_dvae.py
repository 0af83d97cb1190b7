"""The dVAE against OpenAI's `dall-e` package: golden fixtures (tests/fixtures/dvae, from tools/make_dvae_fixtures.py;
no torch needed) and, when torch and dall_e import, fresh random modules; the `dalle convert dvae` converter (round
trip, key errors, pickles refused), the tokenizer through a model directory, and map/unmap_pixels."""

from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle import kinds
from dalle import model_dir as checkpoint
from dalle.modeling import param_check
from dalle.modeling.dvae import convert as convert_dvae
from dalle.modeling.dvae import model as dvae_lib
from dalle.modeling.dvae.api import DVAETokenizer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "dvae")


def _fixture(part: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURES, f"{part}.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def converted():
    """(params, config, model) of the fixture weights, read the way `dalle convert dvae --from` reads them."""
    params, config = convert_dvae.load_source(FIXTURES, resolution=32)
    cfg = dvae_lib.DVAEConfig.from_config(config)
    return params, config, dvae_lib.DVAE(cfg)


# ----------------------------------------------------------------------------------------------------------------
# (a) golden fixtures
# ----------------------------------------------------------------------------------------------------------------
def test_fixture_architecture_is_read_off_the_shapes(converted):
    _, config, _ = converted
    m = config.model
    assert (m.kind, m.n_hid, m.n_blk_per_group, m.vocab_size, m.n_init, m.group_count) == ("dvae", 8, 1, 32, 8, 4)
    assert (m.input_channels, m.output_channels, m.resolution) == (3, 3, 32)


def test_encoder_codes_and_decoder_outputs_match_the_fixture(converted):
    params, _, model = converted
    enc, dec = _fixture("encoder"), _fixture("decoder")
    logits = np.asarray(jax.jit(model.encoder_logits)(params, dvae_lib.map_pixels(jnp.asarray(enc["image"]))))
    np.testing.assert_allclose(logits, enc["logits"], atol=1e-4, rtol=0)
    codes = np.asarray(jax.jit(model.encode)(params, jnp.asarray(enc["image"])))
    assert len(np.unique(enc["codes"])) >= 8  # the fixture exercises many codes, not one
    np.testing.assert_array_equal(codes, enc["codes"])
    # The decoder from integer codes (a lookup) and from the same codes one-hot (a matmul), and from a relaxed
    # sample: all as dall_e's Decoder computes them.
    stats = np.asarray(jax.jit(model.decoder_stats)(params, jnp.asarray(dec["codes"])))
    np.testing.assert_allclose(stats, dec["stats"], atol=1e-4, rtol=0)
    one_hot = jax.nn.one_hot(dec["codes"], 32)
    np.testing.assert_allclose(np.asarray(model.decoder_stats(params, one_hot)), dec["stats"], atol=1e-4, rtol=0)
    relaxed = np.asarray(jax.jit(model.decoder_stats)(params, jnp.asarray(dec["relaxed"])))
    np.testing.assert_allclose(relaxed, dec["relaxed_stats"], atol=1e-4, rtol=0)
    assert np.abs(dec["stats"]).max() > 0.1  # a non-trivial output to compare


# ----------------------------------------------------------------------------------------------------------------
# (b) live against the dall-e package (skipped without torch / dall_e)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live():
    torch = pytest.importorskip("torch")
    pytest.importorskip("attr")
    pytest.importorskip("dall_e")
    from tools import make_dvae_fixtures as tool

    # dall-e's smallest valid sizes, two blocks per group (identity paths and post_gain 1/64 that the fixture's
    # one block per group does not have).
    enc, dec = tool.build_reference(n_hid=64, n_blk_per_group=2, vocab_size=512, n_init=8, seed=3)
    images = np.random.default_rng(3).random((3, 32, 32, 3), dtype=np.float32)
    tool.spread_codes(enc, images, seed=3)
    return torch, tool, enc, dec, images


def test_live_reference_equivalence_through_the_converter(live, tmp_path):
    torch, tool, enc, dec, images = live
    src = tmp_path / "dall_e"
    src.mkdir()
    torch.save(enc.state_dict(), str(src / "encoder.pt"))
    torch.save(dec.state_dict(), str(src / "decoder.pt"))
    out = tmp_path / "converted"
    assert convert_dvae.main(["--from", str(src), "--out", str(out), "--resolution", "32"]) == 0
    tok = kinds.load_image_tokenizer(str(out))
    assert isinstance(tok, DVAETokenizer)
    assert (tok.codebook_size, tok.downsample_factor, tok.tokens_per_side, tok.image_size) == (512, 8, 4, 32)

    ref = tool.run_reference(enc, dec, images)
    assert len(np.unique(ref["codes"])) >= 8
    np.testing.assert_array_equal(tok.encode(images), ref["codes"])
    params = tok.params
    np.testing.assert_allclose(np.asarray(tok.model.decoder_stats(params, jnp.asarray(ref["codes"]))), ref["stats"],
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(tok.model.decoder_stats(params, jnp.asarray(ref["relaxed"]))),
                               ref["relaxed_stats"], atol=1e-4, rtol=0)
    # The decoded image is dall_e's own recipe: unmap_pixels(sigmoid(the first 3 channels)).
    from dall_e import unmap_pixels

    want = unmap_pixels(torch.sigmoid(torch.from_numpy(ref["stats"]).permute(0, 3, 1, 2)[:, :3]))
    np.testing.assert_allclose(tok.decode(ref["codes"]), want.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_trust_pickle_reads_a_pickled_module_with_a_warning(live, tmp_path, capsys):
    torch, _, enc, dec, _ = live
    src = tmp_path / "published"
    src.mkdir()
    torch.save(enc, str(src / "encoder.pkl"))  # whole modules, as OpenAI published them
    torch.save(dec, str(src / "decoder.pkl"))
    assert convert_dvae.main(["--from", str(src), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "pickled torch module" in err and "--trust-pickle" in err and "dall-e==0.1" in err
    assert convert_dvae.main(["--from", str(src), "--out", str(tmp_path / "b"), "--trust-pickle"]) == 0
    captured = capsys.readouterr()
    assert "warning: --trust-pickle" in captured.err and "wrote" in captured.out
    params = checkpoint.load_params(str(tmp_path / "b"))
    np.testing.assert_array_equal(params["encoder/input"]["w"],
                                  enc.state_dict()["blocks.input.w"].numpy().transpose(2, 3, 1, 0))
    # A pickled module saved under a state-dict name is refused by the safe loader, with the same advice.
    os.rename(src / "encoder.pkl", src / "encoder.pt")
    assert convert_dvae.main(["--from", str(src), "--encoder", str(src / "encoder.pt"), "--out",
                              str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "not a plain state dict" in err and "--trust-pickle" in err


# ----------------------------------------------------------------------------------------------------------------
# (c) converter
# ----------------------------------------------------------------------------------------------------------------
def _write_parts(directory, enc_sd: dict, dec_sd: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, "encoder.npz"), **enc_sd)
    np.savez(os.path.join(directory, "decoder.npz"), **dec_sd)


def _state_dicts() -> tuple[dict, dict]:
    enc, dec = _fixture("encoder"), _fixture("decoder")
    return ({k[3:]: v for k, v in enc.items() if k.startswith("sd/")},
            {k[3:]: v for k, v in dec.items() if k.startswith("sd/")})


def test_converter_round_trip_writes_a_model_directory(tmp_path, capsys):
    out = tmp_path / "dvae"
    assert convert_dvae.main(["--from", FIXTURES, "--out", str(out), "--resolution", "32"]) == 0
    assert "dVAE f8, 32 codes" in capsys.readouterr().out
    config, params = checkpoint.load_model(str(out))
    assert config.model.kind == "dvae" and config.model.vocab_size == 32
    enc_sd, dec_sd = _state_dicts()
    assert sum(len(p) for p in params.values()) == len(enc_sd) + len(dec_sd)
    for part, sd in (("encoder", enc_sd), ("decoder", dec_sd)):
        for key, value in sd.items():
            module, param = (part + "/" + key[len("blocks."):]).rsplit(".", 1)
            got = np.asarray(params[module.replace(".", "/")][param])
            np.testing.assert_array_equal(got, value.transpose(2, 3, 1, 0) if value.ndim == 4 else value, key)
    # Through the `dalle convert` dispatcher too.
    from dalle import convert

    assert convert.main(["dvae", "--from", FIXTURES, "--out", str(tmp_path / "again")]) == 0


def test_missing_extra_and_misshapen_keys_are_all_named(tmp_path, capsys):
    enc_sd, dec_sd = _state_dicts()
    del enc_sd["blocks.group_2.block_1.res_path.conv_3.b"]
    enc_sd["blocks.group_2.block_1.res_path.conv_9.w"] = np.zeros((4, 4, 3, 3), np.float32)
    dec_sd["blocks.group_4.block_1.res_path.conv_2.w"] = np.zeros((2, 2, 1, 1), np.float32)
    _write_parts(tmp_path / "bad", enc_sd, dec_sd)
    with pytest.raises(convert_dvae.ConversionError) as e:
        convert_dvae.load_source(str(tmp_path / "bad"))
    msg = str(e.value)
    assert "encoder state dict" in msg and "encoder.npz" in msg
    assert "missing keys (1): blocks.group_2.block_1.res_path.conv_3.b" in msg
    assert "unexpected keys (1): blocks.group_2.block_1.res_path.conv_9.w" in msg
    assert "decoder state dict" in msg and "blocks.group_4.block_1.res_path.conv_2.w: (2, 2, 1, 1) != expected" in msg
    # The CLI prints it and fails.
    assert convert_dvae.main(["--from", str(tmp_path / "bad"), "--out", str(tmp_path / "out")]) == 1
    assert "missing keys" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_architecture_disagreements_and_absent_files_are_explained(tmp_path):
    enc_sd, dec_sd = _state_dicts()
    os.makedirs(tmp_path / "half")
    np.savez(tmp_path / "half" / "encoder.npz", **enc_sd)
    with pytest.raises(convert_dvae.ConversionError, match="has no decoder weights .*decoder.pt"):
        convert_dvae.load_source(str(tmp_path / "half"))
    wide = dict(dec_sd, **{"blocks.input.w": np.zeros((8, 64, 1, 1), np.float32)})
    _write_parts(tmp_path / "vocab", enc_sd, wide)
    with pytest.raises(convert_dvae.ConversionError, match="has 32 codes .* but the decoder .* reads 64"):
        convert_dvae.load_source(str(tmp_path / "vocab"))
    with pytest.raises(convert_dvae.ConversionError, match="is not a directory"):
        convert_dvae.load_source(str(tmp_path / "vocab" / "encoder.npz"))
    _write_parts(tmp_path / "empty", {"x": np.zeros(1)}, dec_sd)
    with pytest.raises(convert_dvae.ConversionError, match="has no 'blocks.input.w'"):
        convert_dvae.load_source(str(tmp_path / "empty"))


class _Boom:
    """Unpickling this runs code: what a malicious .pkl would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_never_unpickled_without_trust_pickle(tmp_path, capsys):
    marker = str(tmp_path / "code_ran")
    src = tmp_path / "published"
    src.mkdir()
    for part in ("encoder", "decoder"):
        with open(src / f"{part}.pkl", "wb") as f:
            pickle.dump(_Boom(marker), f)
    assert convert_dvae.main(["--from", str(src), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert not os.path.exists(marker)
    assert "encoder.pkl" in err and "pickled torch module" in err and "--trust-pickle" in err
    assert "torch.load(f'{n}.pkl', weights_only=False).state_dict()" in err  # the one-line conversion
    # The help documents the same.
    with pytest.raises(SystemExit):
        convert_dvae.main(["--help"])
    help_text = capsys.readouterr().out
    assert "--trust-pickle" in help_text and "dall-e==0.1" in help_text and ".state_dict()" in help_text


# ----------------------------------------------------------------------------------------------------------------
# (d) the tokenizer through a saved model directory
# ----------------------------------------------------------------------------------------------------------------
TINY_MODEL = dict(kind="dvae", resolution=16, n_hid=8, n_blk_per_group=1, n_init=8, vocab_size=24, group_count=3)


def test_tokenizer_from_a_model_directory(tmp_path):
    from ml_collections import ConfigDict

    from dalle import config as config_lib

    config = config_lib.validate(ConfigDict({"name": "tiny_dvae", "model": TINY_MODEL}))
    cfg = dvae_lib.DVAEConfig.from_config(config)
    params = dvae_lib.DVAE(cfg).init(jax.random.key(0))
    checkpoint.save_model(str(tmp_path / "m"), params, config)
    tok = kinds.load_image_tokenizer(str(tmp_path / "m"))
    assert isinstance(tok, DVAETokenizer)
    assert (tok.codebook_size, tok.downsample_factor, tok.tokens_per_side, tok.image_size) == (24, 4, 4, 16)

    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    codes = tok.encode(images)
    assert codes.shape == (3, 4, 4) and codes.dtype == np.int32 and 0 <= codes.min() and codes.max() < 24
    np.testing.assert_array_equal(codes, tok.encode(images.astype(np.float32) / 255.0))
    out = tok.decode(codes)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(tok.decode(codes.reshape(3, 16)), out)  # flat square grids
    np.testing.assert_allclose(tok.decode_codes(codes), out)
    np.testing.assert_allclose(tok.reconstruct(images), out)
    assert tok.encode(np.zeros((1, 24, 32, 3), np.uint8)).shape == (1, 6, 8)  # other multiples of the factor
    assert tok.encode(np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, 4, 4)
    for bad, needle in ((np.zeros((1, 16, 16, 1), np.uint8), "1 channels"),
                        (np.zeros((1, 18, 16, 3), np.uint8), "not divisible by the dVAE downsampling factor 4"),
                        (np.full((1, 16, 16, 3), 2.0, np.float32), r"must be in \[0, 1\]"),
                        (np.zeros((16, 16, 3), np.uint8), "must be \\[batch")):
        with pytest.raises(ValueError, match=needle):
            tok.encode(bad)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 24\)"):
        tok.decode(np.full((1, 4, 4), 24))
    with pytest.raises(ValueError, match="square"):
        tok.decode(np.zeros((1, 15), np.int32))
    checkpoint.save_model(str(tmp_path / "other"), params, ConfigDict({"model": {"kind": "vqgan"}}))
    with pytest.raises(checkpoint.CheckpointError, match="kind 'vqgan', not a dVAE"):
        DVAETokenizer.from_checkpoint(str(tmp_path / "other"))


def test_params_that_do_not_fit_are_listed():
    cfg = dvae_lib.DVAEConfig(**{k: v for k, v in TINY_MODEL.items() if k != "kind"})
    params = dvae_lib.DVAE(cfg).init(jax.random.key(0))
    params = {k: v for k, v in params.items() if k != "decoder/output/conv"}
    params["encoder/extra"] = {"w": np.zeros(1)}
    want = r"missing \(2\): decoder/output/conv/b, decoder/output/conv/w\n.*unexpected \(1\): encoder/extra/w"
    with pytest.raises(param_check.ParamMismatchError, match=want):
        dvae_lib.check_params(params, cfg)


def test_published_defaults_and_partition_rules():
    cfg = dvae_lib.DVAEConfig()
    assert (cfg.resolution, cfg.token_grid, cfg.vocab_size, cfg.downsample_factor) == (256, 32, 8192, 8)
    shapes = dvae_lib.expected_param_shapes(cfg)
    assert shapes["encoder/output/conv"]["w"] == (1, 1, 2048, 8192)
    assert shapes["decoder/input"]["w"] == (1, 1, 8192, 128)
    assert shapes["decoder/output/conv"]["w"] == (1, 1, 256, 6)
    # What dall_e's default Encoder() / Decoder() hold, counted from the package.
    count = lambda part: sum(int(np.prod(s)) for m, ps in shapes.items() if m.startswith(part)  # noqa: E731
                             for s in ps.values())
    assert (count("encoder/"), count("decoder/")) == (53_786_240, 43_829_766)
    from dalle import sharding

    axes = sharding.param_logical_axes(shapes_as_arrays(shapes), sharding.get_partition_rules("dvae"))
    assert axes["decoder/input"]["w"] == ("spatial", "spatial", "codebook", "conv_out")
    assert axes["encoder/output/conv"]["w"] == ("spatial", "spatial", "conv_in", "conv_out")


def shapes_as_arrays(shapes):
    return {m: {n: jax.ShapeDtypeStruct(s, jnp.float32) for n, s in ps.items()} for m, ps in shapes.items()}


# ----------------------------------------------------------------------------------------------------------------
# (e) pixels
# ----------------------------------------------------------------------------------------------------------------
def test_map_and_unmap_pixels():
    x = jnp.asarray([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(dvae_lib.map_pixels(x), [0.1, 0.3, 0.5, 0.9], atol=1e-7)
    np.testing.assert_allclose(dvae_lib.unmap_pixels(dvae_lib.map_pixels(x)), x, atol=1e-6)
    np.testing.assert_allclose(dvae_lib.unmap_pixels(jnp.asarray([0.0, 0.05, 0.95, 1.0])), [0.0, 0.0, 1.0, 1.0])
    assert dvae_lib.LOGIT_LAPLACE_EPS == 0.1
