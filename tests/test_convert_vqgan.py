"""Reference equivalence with taming-transformers (random weights, small config), with vqgan-jax's own files and
outputs (tests/fixtures/vqgan_jax_f2_64.npz, from tools/make_vqgan_jax_fixture.py), and converter errors.

The torch reference comes from requirements-ref.txt; without it the taming equivalence tests are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from typing import Any

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
# vqgan-jax's own files: a tree and config.json written by vqgan-jax (save_pretrained), and its codes and images
# --------------------------------------------------------------------------------------------------------------
VQGAN_JAX_FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "vqgan_jax_f2_64.npz")


@pytest.fixture(scope="module")
def upstream() -> dict[str, Any]:
    """The vqgan-jax fixture: `flat` ("/" paths -> arrays in the dtype vqgan-jax saved), `config_json` (its exact
    text), `image` (the input, [-1, 1]), `codes` [B, h*w] and `decoded` (vqgan-jax's encode / decode_code)."""
    z = np.load(VQGAN_JAX_FIXTURE)
    dtype = np.dtype(str(z["param_dtype"]))
    flat = {k[len("param/"):]: z[k].astype(dtype) for k in z.files if k.startswith("param/")}
    return dict(flat=flat, config_json=str(z["config_json"]), image=z["image"], codes=z["codes"],
                decoded=z["decoded"], commit=str(z["upstream_commit"]), msgpack_sha256=str(z["msgpack_sha256"]))


def _write_vqgan_jax_dir(up: dict[str, Any], directory) -> str:
    """config.json + flax_model.msgpack, byte for byte what vqgan-jax's save_pretrained writes for these params."""
    from flax import serialization

    directory.mkdir()
    (directory / "config.json").write_text(up["config_json"])
    data = serialization.msgpack_serialize(published_layouts._nest(up["flat"]))
    assert hashlib.sha256(data).hexdigest() == up["msgpack_sha256"], "not the bytes vqgan-jax wrote"
    (directory / "flax_model.msgpack").write_bytes(data)
    return str(directory)


def test_vqgan_jax_fixture_is_what_vqgan_jax_writes(upstream):
    """Guards the fixture itself: a vqgan-jax save (its config keys, float32 leaves) with outputs worth comparing."""
    assert len(upstream["commit"]) == 40
    doc = json.loads(upstream["config_json"])
    assert set(convert_vqgan.VQGAN_JAX_KEYS) <= doc.keys() and doc["transformers_version"]
    assert {v.dtype for v in upstream["flat"].values()} == {np.dtype(np.float32)}
    assert upstream["flat"]["quantize/embedding/embedding"].shape == (doc["n_embed"], doc["embed_dim"])
    # Norm scales and biases are not at their init (1, 0): a scale/bias mix-up in the converter would show.
    assert not np.allclose(upstream["flat"]["encoder/norm_out/scale"], 1.0)
    assert not np.allclose(upstream["flat"]["decoder/up_0/block_0/nin_shortcut/bias"], 0.0)
    assert len(np.unique(upstream["codes"])) > 16 and float(np.std(upstream["decoded"])) > 0.1


def test_vqgan_jax_checkpoint_converts_to_vqgan_jax_outputs(upstream, tmp_path):
    """`dalle convert vqgan --from DIR` on vqgan-jax's own files: our encode gives its codes, our decode its image."""
    from dalle.modeling.vqgan.api import VQGANTokenizer

    src = _write_vqgan_jax_dir(upstream, tmp_path / "vqgan_jax")
    assert convert_vqgan.main(["--from", src, "--out", str(tmp_path / "converted")]) == 0
    tok = VQGANTokenizer.from_checkpoint(str(tmp_path / "converted"))
    doc = json.loads(upstream["config_json"])
    side = doc["resolution"] // 2 ** (len(doc["ch_mult"]) - 1)
    assert (tok.codebook_size, tok.tokens_per_side) == (doc["n_embed"], side)

    image, ref_codes = upstream["image"], upstream["codes"]  # vqgan-jax's input range, as given to it
    codes = np.asarray(tok.model.encode(tok.params, image))
    np.testing.assert_array_equal(codes.reshape(ref_codes.shape), ref_codes)
    decoded = np.asarray(tok.model.decode_codes(tok.params, ref_codes.reshape(codes.shape)))
    np.testing.assert_allclose(decoded, upstream["decoded"], atol=1e-4, rtol=0)


def test_vqgan_jax_fixture_matches_taming_on_the_same_weights(upstream, tmp_path):
    """taming, loaded strictly with the weights of vqgan-jax's tree, gives vqgan-jax's codes and images; and the
    taming checkpoint of those weights converts to the same params as vqgan-jax's directory."""
    torch, taming_vqgan = _import_taming()
    doc = json.loads(upstream["config_json"])
    ddconfig = {k: doc[k] for k in ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                                    "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv")}
    model = taming_vqgan.VQModel(ddconfig=ddconfig, lossconfig={"target": "torch.nn.Identity"},
                                 n_embed=doc["n_embed"], embed_dim=doc["embed_dim"]).eval()
    sd = convert_vqgan.flax_to_taming_state_dict(published_layouts._nest(upstream["flat"]))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, strict=True)

    image, ref_codes = upstream["image"], upstream["codes"]
    b, side = image.shape[0], int(np.sqrt(ref_codes.shape[1]))
    with torch.no_grad():
        _, _, (_, _, codes) = model.encode(torch.from_numpy(image).permute(0, 3, 1, 2))
        np.testing.assert_array_equal(codes.numpy().reshape(ref_codes.shape), ref_codes)
        z_q = model.quantize.get_codebook_entry(torch.from_numpy(ref_codes.reshape(-1).astype(np.int64)),
                                                (b, side, side, doc["embed_dim"]))
        decoded = model.decode(z_q).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(decoded, upstream["decoded"], atol=1e-4, rtol=0)

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict()}, str(ckpt))
    p_taming, _, _ = convert_vqgan.load_source(str(ckpt), resolution=doc["resolution"])
    p_flax, _, _ = convert_vqgan.load_source(_write_vqgan_jax_dir(upstream, tmp_path / "vqgan_jax"))
    assert p_flax.keys() == p_taming.keys()
    for m in p_flax:
        for n in p_flax[m]:
            np.testing.assert_array_equal(p_flax[m][n], p_taming[m][n], err_msg=f"{m}/{n}")


def test_published_layouts_helper_writes_vqgan_jax_names_and_shapes(upstream, tmp_path):
    """tests/published_layouts.py writes vqgan-jax checkpoints by hand for other tests: its tree has exactly the
    names and shapes of vqgan-jax's own for the same architecture, and its config.json only keys vqgan-jax writes."""
    from flax.traverse_util import flatten_dict

    real = json.loads(upstream["config_json"])
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in real.items() if k in convert_vqgan.VQGAN_JAX_KEYS}
    sd = published_layouts.random_taming_state_dict(arch)
    ours = flatten_dict(published_layouts.vqgan_jax_tree(sd), sep="/")
    assert sorted(ours) == sorted(upstream["flat"])
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in upstream["flat"].items()}

    d = published_layouts.write_vqgan_jax_dir(str(tmp_path / "helper"), sd, arch)
    with open(os.path.join(d, "config.json")) as f:
        written = json.load(f)
    bookkeeping = {"architectures", "transformers_version"}  # transformers' own, not the architecture
    assert written == {k: v for k, v in real.items() if k not in bookkeeping}


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
