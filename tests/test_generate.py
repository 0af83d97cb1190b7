"""`dalle generate` end to end on a tiny random-weight pipeline, and its errors."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import os

import jax
import numpy as np
import pytest
from PIL import Image

from dalle import cli, generation
from dalle import model_dir as checkpoint
from dalle.modeling import model as model_lib
from tests import tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("gen"))
    config = tiny_pipeline.tiny_config(root)
    params = model_lib.build_model(config.model).init(jax.random.PRNGKey(0))
    return checkpoint.save_model(os.path.join(root, "model"), params, config)


def test_generate_writes_grid_and_images(model_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = cli.main(["generate", "a red circle", "a blue square", "--checkpoint", model_dir, "--n", "3",
                     "--top", "2", "--seed", "1", "--out", str(out), "--out-dir", str(tmp_path / "each"),
                     "--scale", "1"])
    assert code == 0, capsys.readouterr().err
    grid = np.asarray(Image.open(out))
    # 2 prompts x 2 kept images of 32 px with 2 px padding.
    assert grid.shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)
    assert sorted(os.listdir(tmp_path / "each")) == ["000_00.png", "000_01.png", "001_00.png", "001_01.png"]


def test_same_seed_same_images(model_dir):
    gen = generation.Generator.from_checkpoint(model_dir)
    a = gen.images(["a red circle"], num_images=2, seed=3, top_k=8)
    b = gen.images(["a red circle"], num_images=2, seed=3, top_k=8)
    c = gen.images(["a red circle"], num_images=2, seed=4, top_k=8)
    assert a.dtype == np.uint8 and a.shape == (2, 32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_unconditional_prompt_is_the_blank_caption(model_dir):
    gen = generation.Generator.from_checkpoint(model_dir)
    blank = gen.unconditional(2)
    assert blank.shape == (2, gen.model.max_text_length)
    assert blank[0, 0] == gen.vocab.eos_id and not blank[0, 1:].any()


@pytest.mark.parametrize("argv,needle", [
    (["generate", ""], "prompt 1 is empty"),
    (["generate"], "no prompt given"),
    (["generate", "x", "--n", "0"], "--n = 0 must be >= 1"),
    (["generate", "x", "--n", "2", "--top", "3"], "--top = 3"),
    (["generate", "x", "--checkpoint", "/nonexistent/ckpt"], "make demo"),
])
def test_errors_a_user_can_act_on(argv, needle, capsys):
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_bad_numbers_and_long_prompt(model_dir, capsys, tmp_path):
    assert cli.main(["generate", "x", "--checkpoint", model_dir, "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    long = " ".join(["a red circle to the left of a blue square"] * 10)
    code = cli.main(["generate", long, "--checkpoint", model_dir, "--n", "1", "--out", str(tmp_path / "g.png")])
    assert code == 0
    assert "truncated" in capsys.readouterr().err
