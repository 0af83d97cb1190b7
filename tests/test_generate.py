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
                     "--upscale", "1"])
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


def test_decode_kernels_are_an_explicit_generator_choice(model_dir):
    """`auto` (the CPU kernels where they run) and `xla` decode steps pick the same greedy codes."""
    kw = dict(num_images=2, seed=0, temperature=0.0)
    auto = generation.Generator.from_checkpoint(model_dir).codes(["a red circle"], **kw)
    xla = generation.Generator.from_checkpoint(model_dir, decode_kernels="xla").codes(["a red circle"], **kw)
    np.testing.assert_array_equal(auto, xla)
    with pytest.raises(generation.GenerationError, match="decode kernels = 'fast' must be one of"):
        generation.Generator.from_checkpoint(model_dir, decode_kernels="fast")


def test_unconditional_prompt_is_the_blank_caption(model_dir):
    gen = generation.Generator.from_checkpoint(model_dir)
    blank = gen.unconditional(2)
    assert blank.shape == (2, gen.model.max_text_length)
    assert blank[0, 0] == gen.vocab.eos_id and not blank[0, 1:].any()


@pytest.mark.parametrize("prompt", ["\x01\x02\x03", "\u200b\u200c\u2060", "https://example.com/a.png"])
def test_prompts_that_clean_to_nothing_are_refused_not_sampled_unconditionally(model_dir, prompt):
    gen = generation.Generator.from_checkpoint(model_dir)
    with pytest.raises(generation.GenerationError, match="prompt 2 .* has no words left after caption cleaning"):
        gen.tokenize(["a red circle", prompt])


@pytest.mark.parametrize("argv,needle", [
    (["generate", ""], "prompt 1 is empty"),
    (["generate"], "no prompt given"),
    (["generate", "x", "--n", "0"], "--n = 0 must be >= 1"),
    (["generate", "x", "--n", "2", "--top", "3"], "--top = 3"),
    (["generate", "x", "--checkpoint", "/nonexistent/ckpt"], "make demo"),
    (["generate", "x", "--seed", "9" * 400], "--seed = 999"),
    (["generate", "x", "--seed", "-1"], "--seed = -1 must be between 0 and 2147483647"),
    (["generate", "x", "--out", "/dev/null/grid.png"], "--out '/dev/null/grid.png': cannot create the folder '/dev/null'"),
    (["generate", "x", "--out", "/"], "--out '/' is a folder"),
    (["generate", "x", "--out-dir", "/dev/null/imgs"], "--out-dir '/dev/null/imgs': cannot create the folder"),
    (["generate", "--prompts-file", "/"], "--prompts-file '/' does not exist or is not a file"),
])
def test_errors_a_user_can_act_on(argv, needle, capsys):
    assert cli.main(argv) == 2
    assert needle in capsys.readouterr().err


def test_unreadable_prompts_files(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert cli.main(["generate", "--prompts-file", str(bad)]) == 2
    assert "is not UTF-8 text (byte 3)" in capsys.readouterr().err


def test_a_prompts_file_without_read_permission(tmp_path, capsys):
    locked = tmp_path / "locked.txt"
    locked.write_text("a red circle\n")
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):  # root reads anything
        pytest.skip("running as root: permissions are not enforced")
    assert cli.main(["generate", "--prompts-file", str(locked)]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_bad_numbers_and_long_prompt(model_dir, capsys, tmp_path):
    assert cli.main(["generate", "x", "--checkpoint", model_dir, "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err
    long = " ".join(["a red circle to the left of a blue square"] * 10)
    code = cli.main(["generate", long, "--checkpoint", model_dir, "--n", "1", "--out", str(tmp_path / "g.png")])
    assert code == 0
    assert "truncated" in capsys.readouterr().err


def _with_sampling(src: str, dst, section: dict) -> str:
    """A copy of a model dir whose config carries `section` as its sampling section."""
    import shutil

    shutil.copytree(src, dst)
    checkpoint.set_config_section(str(dst), "sampling", section)
    return str(dst)


TUNED = dict(guidance=1.5, temperature=0.7, top_k=8, candidates=2, keep=1)


def test_generator_samples_with_the_model_sampling_section(model_dir, tmp_path):
    from dalle import sampling_schema

    assert generation.Generator.from_checkpoint(model_dir).sampling == sampling_schema.resolve(None)  # no section
    gen = generation.Generator.from_checkpoint(_with_sampling(model_dir, tmp_path / "tuned", TUNED))
    s = gen.sampling
    assert (s.guidance, s.temperature, s.top_k, s.top_p, s.candidates, s.kept) == (1.5, 0.7, 8, 1.0, 2, 1)
    implicit = gen.codes(["a red circle"], num_images=2, seed=1)
    explicit = gen.codes(["a red circle"], num_images=2, seed=1, condition_scale=1.5, temperature=0.7, top_k=8,
                         top_p=1.0)
    other = gen.codes(["a red circle"], num_images=2, seed=1, condition_scale=3.0, temperature=1.0, top_k=0)
    assert np.array_equal(implicit, explicit) and not np.array_equal(implicit, other)


def test_flags_override_the_model_sampling_section(model_dir, tmp_path, monkeypatch, capsys):
    tuned = _with_sampling(model_dir, tmp_path / "tuned", {**TUNED, "clip_checkpoint": str(tmp_path / "no_clip")})
    calls = []
    original = generation.Generator.images

    def recording(self, prompts, **kw):
        calls.append(kw)
        return original(self, prompts, **kw)

    monkeypatch.setattr(generation.Generator, "images", recording)
    out = tmp_path / "g.png"
    base = ["generate", "a red circle", "--checkpoint", tuned, "--out", str(out), "--upscale", "1"]
    assert cli.main(base) == 0  # no flags: the model's section
    err = capsys.readouterr().err
    assert "sampling.clip_checkpoint" in err and "not reranked" in err  # its CLIP is missing: a warning, no rerank
    assert calls[-1] == dict(num_images=2, seed=0, condition_scale=1.5, temperature=0.7, top_k=8, top_p=1.0,
                             image_prompt=None)
    assert np.asarray(Image.open(out)).shape == (32 + 2 * 2, 32 + 2 * 2, 3)  # keep 1
    assert cli.main(base + ["--n", "3", "--top", "0", "--condition-scale", "2", "--top-k", "0", "--clip", ""]) == 0
    assert "warning" not in capsys.readouterr().err  # --clip '': reranking off on purpose
    assert calls[-1] == dict(num_images=3, seed=0, condition_scale=2.0, temperature=0.7, top_k=0, top_p=1.0,
                             image_prompt=None)
    assert np.asarray(Image.open(out)).shape == (32 + 2 * 2, 3 * 32 + 4 * 2, 3)  # all 3 kept
    assert cli.main(base + ["--top", "3"]) == 2
    assert "--top = 3 must be between 0 (keep all) and the model's sampling.candidates = 2" in capsys.readouterr().err


def test_paths_in_a_model_config_resolve_from_any_directory(model_dir, tmp_path, monkeypatch):
    """Training stores paths relative to where it ran (outputs/demo/...): generation finds them from the model
    directory upwards, whatever the current directory."""
    import shutil

    config, params = checkpoint.load_model(model_dir)
    proj = tmp_path / "proj"
    shutil.copytree(config.data.vqgan_checkpoint, proj / "vqgan")
    (proj / "tok").mkdir()
    shutil.copy(config.data.tokenizer_path, proj / "tok" / "spm.model")
    (proj / "clip").mkdir()
    config.data.tokenizer_path = "proj/tok/spm.model"  # as written by a run started in tmp_path
    config.data.vqgan_checkpoint = "proj/vqgan"
    config.sampling = {"clip_checkpoint": "proj/clip"}
    moved = checkpoint.save_model(str(proj / "runs" / "dalle" / "model"), params, config)
    monkeypatch.chdir(tmp_path / "proj" / "tok")  # nowhere near the paths' root
    gen = generation.Generator.from_checkpoint(moved)
    assert gen.config.data.tokenizer_path == str(proj / "tok" / "spm.model")
    assert gen.config.data.vqgan_checkpoint == str(proj / "vqgan")
    assert gen.config.sampling.clip_checkpoint == str(proj / "clip")
    assert gen.tokenize(["a red circle"]).tokens.shape[0] == 1
    import tempfile

    link = os.path.join(tempfile.mkdtemp(), "runs")  # a model reached through a link: found where it lives
    os.symlink(proj / "runs", link)
    assert checkpoint.resolve_path(os.path.join(link, "dalle", "model"), "proj/vqgan") == str(proj / "vqgan")
    assert checkpoint.resolve_path(moved, "no/such/file") == "no/such/file"
    assert checkpoint.resolve_path(moved, "/abs/path") == "/abs/path"


# --- precision (--dtype, Generator(dtype=...), eval.dtype) -----------------------------------------------------
def _floating_dtypes(params) -> set[str]:
    return {str(x.dtype) for x in jax.tree_util.tree_leaves(params) if np.issubdtype(x.dtype, np.inexact)
            or str(x.dtype) == "bfloat16"}


def test_bfloat16_generation_casts_params_and_mostly_agrees_with_float32(model_dir):
    prompts = ["a red circle", "a blue square", "a green star", "a yellow cross"]
    f32 = generation.Generator.from_checkpoint(model_dir)
    b16 = generation.Generator.from_checkpoint(model_dir, dtype="bfloat16")
    assert _floating_dtypes(f32.params) == {"float32"} and _floating_dtypes(b16.params) == {"bfloat16"}
    images = b16.images(prompts[:1], num_images=2, seed=0)
    assert images.dtype == np.uint8 and images.shape == (2, 32, 32, 3)
    greedy = dict(temperature=0.0, condition_scale=1.0)
    agreement = float(np.mean(f32.codes(prompts, **greedy) == b16.codes(prompts, **greedy)))
    print(f"bfloat16 vs float32 greedy codes, random tiny decoder-only model: {agreement:.1%} agree")
    assert agreement >= 0.75  # measured: 91.0% (4 prompts x 64 codes, guidance 1)


def test_dtype_flag_and_its_errors(model_dir, tmp_path, capsys):
    out = tmp_path / "g.png"
    assert cli.main(["generate", "a red circle", "--checkpoint", model_dir, "--n", "1", "--dtype", "bfloat16",
                     "--out", str(out), "--upscale", "1"]) == 0, capsys.readouterr().err
    assert np.asarray(Image.open(out)).shape == (32 + 2 * 2, 32 + 2 * 2, 3)
    with pytest.raises(SystemExit):
        cli.main(["generate", "x", "--dtype", "float64"])
    assert "invalid choice: 'float64'" in capsys.readouterr().err
    with pytest.raises(generation.GenerationError, match="dtype = 'half' must be float32, bfloat16 or float16"):
        generation.Generator.from_checkpoint(model_dir, dtype="half")
    with pytest.raises(generation.GenerationError, match="native decode kernels compute in float32"):
        generation.Generator.from_checkpoint(model_dir, dtype="float16", decode_kernels="native")


def test_eval_dtype_reaches_the_eval_generator(model_dir):
    from dalle import config as config_lib
    from dalle.eval import main as eval_main
    from dalle.eval import schema as eval_schema

    ev = eval_schema.eval_defaults()
    ev.dtype = "bfloat16"
    gen = eval_main.Generator(model_dir, ev, checkpoint.read_config(model_dir).mesh)
    assert gen.gen.dtype == "bfloat16" and _floating_dtypes(gen.gen.params) == {"bfloat16"}
    ev.dtype = "half"
    with pytest.raises(config_lib.ConfigError, match="eval.dtype = 'half' must be float32, bfloat16 or float16"):
        config_lib.validate(config_lib.ConfigDict({"eval": ev}))


# --- image completion -------------------------------------------------------------------------------------------
def _picture(path) -> str:
    """A 40x48 RGBA picture (not square, with alpha: the loader must crop and composite it)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:5, :, 3] = 0  # transparent rows composite onto white
    Image.fromarray(pixels, "RGBA").save(path)
    return str(path)


def _dalle_bart_dir(model_dir, root) -> str:
    from dalle import config as config_lib
    from ml_collections import ConfigDict

    config = checkpoint.read_config(model_dir)
    config.model = ConfigDict(dict(kind="dalle_bart", d_model=32, encoder_layers=1, decoder_layers=2,
                                   encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                   decoder_ffn_dim=64, encoder_vocab_size=64,
                                   image_vocab_size=config.model.image_vocab_size,
                                   max_text_length=config.model.max_text_length, image_length=64))
    config = config_lib.validate(config)
    params = model_lib.build_model(config.model).init(jax.random.PRNGKey(1))
    return checkpoint.save_model(os.path.join(root, "bart"), params, config)


def test_completion_prompt_is_the_top_rows_of_the_encoded_picture(model_dir, tmp_path):
    from dalle.data import images as images_lib

    gen = generation.Generator.from_checkpoint(model_dir)
    path = _picture(tmp_path / "p.png")
    side = gen.vqgan.tokens_per_side
    prompt = gen.completion_prompt(path, 3)
    pixels = images_lib.read_user_image(path, gen.vqgan.image_size)
    assert pixels.shape == (32, 32, 3) and (pixels[0] == 255).all()  # cropped square, alpha composited on white
    full = gen.vqgan.encode(pixels[None]).reshape(-1)
    assert prompt.dtype == np.int32 and prompt.shape == (3 * side,)
    np.testing.assert_array_equal(prompt, full[: 3 * side])


@pytest.mark.parametrize("kind", ["decoder_only", "dalle_bart"])
def test_completion_keeps_the_given_rows_and_draws_the_rest(kind, model_dir, tmp_path):
    directory = model_dir if kind == "decoder_only" else _dalle_bart_dir(model_dir, str(tmp_path))
    gen = generation.Generator.from_checkpoint(directory)
    prompt = gen.completion_prompt(_picture(tmp_path / "p.png"), 2)
    codes = gen.codes(["a red circle", "a blue square"], num_images=3, seed=0, top_k=8, image_prompt=prompt)
    assert codes.shape == (6, 64)
    assert (codes[:, :16] == prompt).all()
    free = gen.codes(["a red circle", "a blue square"], num_images=3, seed=0, top_k=8)
    assert not (free[:, :16] == prompt).all()  # without the prompt the top rows are drawn too
    # Per-prompt prompts ([P, n]) are kept row by row.
    other = (prompt + 1) % gen.model.image_vocab_size
    codes = gen.codes(["a red circle", "a blue square"], num_images=2, seed=0, top_k=8,
                      image_prompt=np.stack([prompt, other]))
    assert (codes[:2, :16] == prompt).all() and (codes[2:, :16] == other).all()
    images = gen("a red circle", n=2, image=_picture(tmp_path / "q.png"), keep_rows=4, clip="")
    assert images.shape == (2, 32, 32, 3)


def test_completion_errors(model_dir, tmp_path):
    gen = generation.Generator.from_checkpoint(model_dir)
    picture = _picture(tmp_path / "p.png")
    for rows in (0, 8, -1, True, 2.5):
        with pytest.raises(generation.GenerationError, match=r"keep rows = .* must be between 1 and 7"):
            gen.completion_prompt(picture, rows)
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(generation.GenerationError, match="image prompt .*notes.png' is not an image"):
        gen.completion_prompt(str(tmp_path / "notes.png"), 2)
    with pytest.raises(generation.GenerationError, match="does not exist"):
        gen.completion_prompt(str(tmp_path / "missing.png"), 2)
    with pytest.raises(generation.GenerationError, match=r"array image must be .* got shape \(4, 4, 2\)"):
        gen.completion_prompt(np.zeros((4, 4, 2), np.uint8), 2)
    with pytest.raises(generation.GenerationError, match="at least one must be left to sample"):
        gen.codes(["a red circle"], image_prompt=np.zeros(64, np.int32))
    with pytest.raises(generation.GenerationError, match=r"codes must be in \[0, 64\)"):
        gen.codes(["a red circle"], image_prompt=np.full(8, 99))
    with pytest.raises(generation.GenerationError, match="needs both image and keep_rows"):
        gen("a red circle", image=picture)


def test_generate_cli_completes_an_image(model_dir, tmp_path, capsys):
    picture = _picture(tmp_path / "p.png")
    out = tmp_path / "grid.png"
    code = cli.main(["generate", "a red circle", "--checkpoint", model_dir, "--n", "2", "--top", "2", "--clip", "",
                     "--image-prompt", picture, "--keep-rows", "3", "--out", str(out), "--upscale", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "completing the top 3 code rows" in captured.out
    assert np.asarray(Image.open(out)).shape == (32 + 2 * 2, 2 * 32 + 3 * 2, 3)
    for argv, needle in [
        (["--image-prompt", picture], "needs both --image-prompt FILE and --keep-rows K"),
        (["--keep-rows", "2"], "needs both --image-prompt FILE and --keep-rows K"),
        (["--image-prompt", str(tmp_path / "nope.png"), "--keep-rows", "2"], "does not exist or is not a file"),
        (["--image-prompt", picture, "--keep-rows", "0"], "--keep-rows = 0 must be >= 1"),
        (["--image-prompt", picture, "--keep-rows", "8"], "--keep-rows = 8 must be between 1 and 7"),
    ]:
        assert cli.main(["generate", "a red circle", "--checkpoint", model_dir, "--out", str(out)] + argv) == 2
        assert needle in capsys.readouterr().err
