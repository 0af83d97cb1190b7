"""Reference equivalence with taming-transformers (random weights, small config) and converter errors.

The torch reference comes from requirements-ref.txt; without it the equivalence tests are skipped.
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest

from dalle.modeling.vqgan import convert as convert_vqgan
from dalle.modeling.vqgan import model as vqgan_lib
from tests import published_layouts

# A small architecture that still has every kind of block: nin_shortcut (32 -> 64 channels), attention in the
# encoder and decoder (at side 8), Downsample/Upsample, mid blocks.
DDCONFIG = dict(double_z=False, z_channels=32, resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
                num_res_blocks=1, attn_resolutions=[8], dropout=0.0)
N_EMBED, EMBED_DIM = 64, 8


def _import_taming():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_lightning")  # import before the torchvision stub (torchmetrics probes it)
    if "torchvision" not in sys.modules:
        try:
            import torchvision  # noqa: F401
        except Exception:  # taming.main imports torchvision, which VQModel never uses
            sys.modules["torchvision"] = types.ModuleType("torchvision")
    vqgan = pytest.importorskip("taming.models.vqgan")
    return torch, vqgan


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch, taming_vqgan = _import_taming()
    torch.manual_seed(0)
    model = taming_vqgan.VQModel(ddconfig=DDCONFIG, lossconfig={"target": "torch.nn.Identity"},
                                 n_embed=N_EMBED, embed_dim=EMBED_DIM).eval()
    with torch.no_grad():  # random weights everywhere, norms included, so no parameter goes untested
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.2 * torch.randn_like(p))
            elif name != "quantize.embedding.weight":
                p.copy_(torch.empty_like(p).uniform_(-1, 1) * (3.0 / np.prod(p.shape[1:])) ** 0.5)
        # Codebook = encoder outputs of other random images (plus noise): the codes then spread over the codebook.
        z = model.quant_conv(model.encoder(torch.rand(4, 3, 16, 16) * 2 - 1)).permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        pick = torch.randperm(z.shape[0])[:N_EMBED]
        model.quantize.embedding.weight.copy_(z[pick] + 0.01 * z.std() * torch.randn(N_EMBED, EMBED_DIM))
    path = tmp_path_factory.mktemp("taming") / "last.ckpt"
    sd = model.state_dict()
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)  # like a training checkpoint
    torch.save({"state_dict": sd, "global_step": 0}, str(path))
    return torch, model, str(path)


def _images(n=3, side=16, seed=0):
    return np.random.default_rng(seed).random((n, side, side, 3), dtype=np.float32)


def test_reference_equivalence_codes_and_images(reference, tmp_path):
    torch, model, path = reference
    from dalle.modeling.vqgan.api import VQGANTokenizer

    out = tmp_path / "converted"
    assert convert_vqgan.main(["--from", path, "--out", str(out), "--resolution", "16"]) == 0
    tok = VQGANTokenizer.from_checkpoint(str(out))
    assert (tok.downsample_factor, tok.codebook_size, tok.image_size) == (2, N_EMBED, 16)

    images = _images(3, 16)
    x = torch.from_numpy(images * 2 - 1).permute(0, 3, 1, 2)
    with torch.no_grad():
        quant, emb_loss, (_, _, ref_codes) = model.encode(x)
        ref_codes = ref_codes.reshape(3, 8, 8).numpy()
        ref_dec = model.decode(model.quantize.get_codebook_entry(torch.from_numpy(ref_codes.reshape(-1)),
                                                                 (3, 8, 8, EMBED_DIM))).permute(0, 2, 3, 1).numpy()
    codes = tok.encode(images)
    assert codes.dtype == np.int32 and codes.shape == (3, 8, 8)
    assert len(np.unique(ref_codes)) > 8, "degenerate reference: too few distinct codes to test anything"
    np.testing.assert_array_equal(codes, ref_codes)

    # Decoded images before our [0, 1] mapping and clipping: compare in taming's [-1, 1] range.
    raw = np.asarray(tok.model.decode_codes(tok.params, codes))
    np.testing.assert_allclose(raw, ref_dec, atol=1e-4, rtol=0)
    np.testing.assert_allclose(tok.decode(codes), np.clip((ref_dec + 1) / 2, 0, 1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(tok.decode(codes.reshape(3, 64)), tok.decode(codes), atol=0)

    # Full forward pass and taming's (legacy-weighted) quantizer loss.
    fwd = tok.model.apply(tok.params, np.asarray(images * 2 - 1))
    with torch.no_grad():
        ref_rec, ref_diff = model(x)
    np.testing.assert_allclose(np.asarray(fwd.recon), ref_rec.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(float(fwd.quant.loss), float(ref_diff), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(fwd.quant.z_q), quant.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_flax_checkpoint_dir_converts_to_the_same_params(reference, tmp_path):
    """A vqgan-jax style directory (config.json + flax_model.msgpack) gives the params of the taming file."""
    torch, model, path = reference
    from flax import serialization

    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    tree = published_layouts.vqgan_jax_tree(sd)  # vqgan-jax naming, written out independently of the converter
    d = tmp_path / "vqgan_jax"
    d.mkdir()
    (d / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(tree))
    (d / "config.json").write_text(json.dumps(dict(DDCONFIG, n_embed=N_EMBED, embed_dim=EMBED_DIM,
                                                   resamp_with_conv=True, give_pre_end=False)))
    p_flax, _, _ = convert_vqgan.load_source(str(d))
    p_taming, _, ignored = convert_vqgan.load_source(path, resolution=16)
    assert ignored == ["loss.discriminator.main.0.weight"]
    assert p_flax.keys() == p_taming.keys()
    for m in p_flax:
        for n in p_flax[m]:
            np.testing.assert_array_equal(p_flax[m][n], p_taming[m][n], err_msg=f"{m}/{n}")


# --------------------------------------------------------------------------------------------------------------
# Without torch: mapping table and error messages
# --------------------------------------------------------------------------------------------------------------
def _small_cfg():
    return vqgan_lib.VQGANConfig(resolution=16, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                 z_channels=32, n_embed=N_EMBED, embed_dim=EMBED_DIM)


def _fake_state_dict(cfg):
    rng = np.random.default_rng(0)
    sd = {}
    for key, (_, name, shape) in convert_vqgan.key_table(cfg).items():
        torch_shape = (shape[3], shape[2], shape[0], shape[1]) if name == "w" else shape
        sd[key] = rng.standard_normal(torch_shape).astype(np.float32)
    return sd


def test_key_table_matches_taming_names():
    table = convert_vqgan.key_table(_small_cfg())
    for key in ("encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.bias",
                "encoder.down.1.block.0.nin_shortcut.weight", "encoder.down.1.attn.0.proj_out.weight",
                "encoder.mid.block_1.conv2.weight", "encoder.mid.attn_1.q.bias", "encoder.norm_out.bias",
                "quant_conv.weight", "quantize.embedding.weight", "post_quant_conv.bias",
                "decoder.up.1.block.1.conv1.weight", "decoder.up.1.attn.1.k.weight",
                "decoder.up.1.upsample.conv.weight",
                "decoder.up.0.block.0.nin_shortcut.weight", "decoder.conv_out.weight"):
        assert key in table, key
    assert table["encoder.down.1.block.0.conv1.weight"] == ("encoder/down_1/block_0/conv1", "w", (3, 3, 32, 64))
    assert table["encoder.mid.attn_1.norm.bias"] == ("encoder/mid/attn_1/norm", "offset", (64,))
    assert "decoder.up.0.upsample.conv.weight" not in table and "encoder.down.1.downsample.conv.weight" not in table


def test_infer_config_and_round_trip_npz(tmp_path):
    cfg = _small_cfg()
    sd = _fake_state_dict(cfg)
    arch = convert_vqgan.infer_taming_config(sd, resolution=16)
    assert arch["ch_mult"] == (1, 2) and arch["attn_resolutions"] == (8,) and arch["num_res_blocks"] == 1
    assert (arch["n_embed"], arch["embed_dim"], arch["z_channels"]) == (N_EMBED, EMBED_DIM, 32)
    np.savez(tmp_path / "sd.npz", **sd)
    params, config, _ = convert_vqgan.load_source(str(tmp_path / "sd.npz"), resolution=16)
    assert config.model.legacy_loss is True
    np.testing.assert_array_equal(params["encoder/conv_in"]["w"],
                                  sd["encoder.conv_in.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["quantize"]["embeddings"], sd["quantize.embedding.weight"])


def test_missing_unexpected_and_misshapen_keys_are_listed():
    cfg = _small_cfg()
    sd = _fake_state_dict(cfg)
    del sd["encoder.mid.attn_1.q.weight"]
    del sd["decoder.conv_out.bias"]
    sd["encoder.extra.weight"] = np.zeros(3, np.float32)
    sd["quant_conv.bias"] = np.zeros(5, np.float32)
    with pytest.raises(convert_vqgan.ConversionError) as e:
        convert_vqgan.convert_taming_state_dict(sd, cfg)
    msg = str(e.value)
    assert "missing keys (2): decoder.conv_out.bias, encoder.mid.attn_1.q.weight" in msg
    assert "unexpected keys (1): encoder.extra.weight" in msg
    assert "quant_conv.bias: (5,) != expected (8,)" in msg


def test_cli_errors(tmp_path, capsys):
    assert convert_vqgan.main(["--from", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert convert_vqgan.main(["--from", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "not a vqgan-jax checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


def test_vqgan_jax_layout_helper_is_the_inverse_of_flax_to_taming():
    """The test helper that writes vqgan-jax trees (tests/published_layouts.py) maps back to the same state dict."""
    sd = _fake_state_dict(_small_cfg())
    back = convert_vqgan.flax_to_taming_state_dict(published_layouts.vqgan_jax_tree(sd))
    assert back.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
