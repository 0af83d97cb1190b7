"""dalle-mini as published, imported in one command: `dalle convert dalle-mini --from DIR --out OUT` finds the
vqgan-jax VQGAN next to the weights (or takes --vqgan), and `dalle generate "..." --checkpoint OUT` runs with no
other flag from any directory; the converted weights keep their stored precision unless --dtype asks."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from dalle import cli, generation
from dalle import model_dir as checkpoint
from dalle.modeling import convert_dalle_mini as conv
from tests import published_layouts as layouts


def _convert(*args: str) -> int:
    return cli.main(["convert", "dalle-mini", *args])


def _dtypes(params) -> set[str]:
    return {str(x.dtype) for x in jax.tree_util.tree_leaves(params)}


def test_one_directory_import_then_generate_with_no_other_flag(tmp_path, monkeypatch, capsys):
    """The VQGAN beside the weights is converted into OUT/vqgan, the tokenizer copied to OUT/tokenizer, both
    recorded relative to OUT: OUT generates from another directory, moved, with the sources gone."""
    src = layouts.tiny_dalle_mini(str(tmp_path / "downloads"))
    out = tmp_path / "weights" / "dalle_mini"
    assert _convert("--from", src, "--out", str(out)) == 0, capsys.readouterr().err
    assert "vqgan/: VQGAN f4, 40 codes" in capsys.readouterr().out
    data = checkpoint.read_config(str(out)).data
    assert (data.tokenizer_path, data.vqgan_checkpoint) == ("tokenizer", "vqgan")
    assert checkpoint.read_config(str(out / "vqgan")).model.kind == "vqgan"
    assert checkpoint.read_extra(str(out))["vqgan_converted_from"] == str(tmp_path / "downloads" /
                                                                           "vqgan_imagenet_f4_40")

    moved = tmp_path / "elsewhere" / "model"
    shutil.move(str(out), str(moved))
    shutil.rmtree(tmp_path / "downloads")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli.main(["generate", "a red circle", "--checkpoint", str(moved), "--n", "2", "--upscale", "1"]) == 0, \
        capsys.readouterr().err
    grid = np.asarray(Image.open(tmp_path / "elsewhere" / "grid.png"))
    assert grid.shape == (16 + 2 * 2, 2 * 16 + 3 * 2, 3)  # 2 images of 16 px (4x4 tokens of an f4 VQGAN)
    assert grid[2:18, 2:18].std() > 0  # the VQGAN drew something


def test_vqgan_search_order_and_the_vqgan_flag(tmp_path, capsys):
    """A subfolder of DIR wins over a folder beside it; --vqgan takes a vqgan-jax dir (converted into OUT/vqgan)
    or a `dalle convert vqgan` output (recorded where it is)."""
    root = tmp_path / "both"
    src = layouts.tiny_dalle_mini(str(root), vqgan_place="inside")
    beside = layouts.write_vqgan_jax_dir(str(root / "another_vqgan"), layouts.random_taming_state_dict(
        layouts.TINY_VQGAN, seed=1), layouts.TINY_VQGAN)
    model_cfg = conv.model_config_from_dalle_mini(json.load(open(os.path.join(src, "config.json"))))
    assert conv.find_vqgan(src, model_cfg) == os.path.join(src, "vqgan")
    shutil.rmtree(os.path.join(src, "vqgan"))
    assert conv.find_vqgan(src, model_cfg) == beside

    lone = layouts.tiny_dalle_mini(str(tmp_path / "lone"), vqgan_place="none")
    raw = layouts.write_vqgan_jax_dir(str(tmp_path / "models" / "vq"), layouts.random_taming_state_dict(
        layouts.TINY_VQGAN), layouts.TINY_VQGAN)
    out = tmp_path / "out_raw"
    assert _convert("--from", lone, "--out", str(out), "--vqgan", raw) == 0, capsys.readouterr().err
    assert checkpoint.read_config(str(out)).data.vqgan_checkpoint == "vqgan" and (out / "vqgan" / "params").is_dir()

    converted_vq = tmp_path / "models" / "vq_converted"
    assert cli.main(["convert", "vqgan", "--from", raw, "--out", str(converted_vq)]) == 0
    out = tmp_path / "out_converted"
    assert _convert("--from", lone, "--out", str(out), "--vqgan", str(converted_vq)) == 0, capsys.readouterr().err
    assert checkpoint.read_config(str(out)).data.vqgan_checkpoint == str(converted_vq)
    assert not (out / "vqgan").exists()
    gen = generation.Generator.from_checkpoint(str(out))
    assert gen.vqgan.codebook_size == 40 and gen.vqgan.tokens_per_side == 4


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_or_ambiguous_pieces_are_one_line_errors(tmp_path, capsys):
    lone = layouts.tiny_dalle_mini(str(tmp_path / "lone"), vqgan_place="none")
    out = tmp_path / "out"
    assert _convert("--from", lone, "--out", str(out)) == 2
    err = _one_line_error(capsys)
    assert "no VQGAN found in the subfolders of" in err and "pass --vqgan DIR" in err and "--weights-only" in err
    assert not out.exists()  # nothing written, and the weights were never read

    assert _convert("--from", lone, "--out", str(out), "--vqgan", str(tmp_path / "nope")) == 2
    err = _one_line_error(capsys)
    assert "--vqgan" in err and "does not exist" in err
    assert _convert("--from", lone, "--out", str(out), "--vqgan", str(tmp_path)) == 2
    assert "is neither a vqgan-jax checkpoint" in _one_line_error(capsys)

    big = dict(layouts.TINY_VQGAN, n_embed=64)
    misfit = layouts.write_vqgan_jax_dir(str(tmp_path / "vq64"), layouts.random_taming_state_dict(big), big)
    assert _convert("--from", lone, "--out", str(out), "--vqgan", misfit) == 2
    assert "64 codes, the model draws 40" in _one_line_error(capsys)
    shutil.move(misfit, str(tmp_path / "lone" / "vq64"))  # beside the weights: found, and refused by name
    assert _convert("--from", lone, "--out", str(out)) == 2
    err = _one_line_error(capsys)
    assert "no VQGAN next to" in err and "vq64 has 64 codes" in err and "pass --vqgan DIR" in err

    two = layouts.tiny_dalle_mini(str(tmp_path / "two"), vqgan_place="beside")
    layouts.write_vqgan_jax_dir(str(tmp_path / "two" / "second"), layouts.random_taming_state_dict(
        layouts.TINY_VQGAN), layouts.TINY_VQGAN)
    assert _convert("--from", two, "--out", str(out)) == 2
    err = _one_line_error(capsys)
    assert "several VQGANs" in err and "--vqgan DIR to choose" in err

    for f in conv.TOKENIZER_FILES:
        if os.path.exists(os.path.join(two, f)):
            os.remove(os.path.join(two, f))
    assert _convert("--from", two, "--out", str(out)) == 2
    assert "has no tokenizer" in _one_line_error(capsys)
    assert _convert("--from", two, "--out", str(out), "--weights-only") == 0  # the transformer alone


def test_converted_weights_keep_their_stored_precision_unless_asked(tmp_path, capsys):
    src = layouts.tiny_dalle_mini(str(tmp_path / "fp16"), dtype=np.float16)
    for flag, want in (([], "float16"), (["--dtype", "bfloat16"], "bfloat16"), (["--dtype", "float32"], "float32")):
        out = tmp_path / f"out_{want}"
        assert _convert("--from", src, "--out", str(out), *flag) == 0, capsys.readouterr().err
        assert f"{want} parameters" in capsys.readouterr().out
        assert _dtypes(checkpoint.load_model(str(out))[1]) == {want}
    with pytest.raises(SystemExit):
        _convert("--from", src, "--out", str(tmp_path / "x"), "--dtype", "float64")
    # The float16 model samples (in float32 by default, in float16 when asked).
    gen = generation.Generator.from_checkpoint(str(tmp_path / "out_float16"))
    assert _dtypes(gen.params) == {"float32"}
    gen16 = generation.Generator.from_checkpoint(str(tmp_path / "out_float16"), dtype="float16")
    assert _dtypes(gen16.params) == {"float16"}
    assert gen16.images(["a red circle"], num_images=1, seed=0).shape == (1, 16, 16, 3)


def test_bfloat16_greedy_codes_agree_with_float32_on_converted_weights(tmp_path, capsys):
    src = layouts.tiny_dalle_mini(str(tmp_path / "dm"))
    out = tmp_path / "out"
    assert _convert("--from", src, "--out", str(out)) == 0, capsys.readouterr().err
    prompts = ["a red circle", "two blue squares", "a yellow star", "a purple square"]
    f32 = generation.Generator.from_checkpoint(str(out))
    b16 = generation.Generator.from_checkpoint(str(out), dtype="bfloat16")
    assert _dtypes(b16.params) == {"bfloat16"}
    agreement = float(np.mean(f32.codes(prompts, temperature=0.0) == b16.codes(prompts, temperature=0.0)))
    print(f"bfloat16 vs float32 greedy codes, converted tiny dalle-mini: {agreement:.1%} agree")
    assert agreement >= 0.75  # measured: 100% (4 prompts x 16 codes, guidance 3)
