"""CLIP-guided VQGAN generation (dalle/clip_guided.py) with a tiny random VQGAN and a tiny random CLIP.

The VQGAN (32 px, 8x8 codes) and the CLIP (16 px input, so every cutout is resized) differ in resolution on
purpose. Random weights suffice: optimising towards any fixed text embedding must raise the similarity to it.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image, ImageDraw

from dalle import clip_guided, clip_guided_schema
from dalle import config as config_lib
from dalle import model_dir as checkpoint
from tests import tiny_pipeline

CAPTIONS = ["a red circle", "a blue square", "a green star in the center", "a small yellow triangle",
            "a large purple diamond on the left", "an orange cross at the top"]
PROMPTS = ["a red circle", "a blue square"]


def tiny_clip(root: str) -> str:
    """A random 16 px CLIP with its own sentencepiece tokenizer; returns its model dir."""
    from dalle.modeling.clip import model as clip_lib
    from dalle.modeling.clip import schema as clip_schema
    from dalle.tokenizers import sentencepiece as tokenizer

    tok = os.path.join(root, "tok", "spm.model")
    vocab = tokenizer.train_tokenizer(CAPTIONS * 4, tok, 40)["vocab_size"]
    m = clip_schema.clip_defaults()
    m.update(dict(embed_dim=16, image_size=16, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                  vision_mlp_dim=64, context_length=12, vocab_size=vocab, text_width=32, text_layers=1,
                  text_heads=2, text_mlp_dim=64, text_pool="eos", eos_id=1, activation="gelu", tokenizer_path=tok))
    params = clip_lib.CLIP(m).init(jax.random.PRNGKey(1))
    return checkpoint.save_model(os.path.join(root, "clip"), params, ConfigDict({"model": m}))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> tuple[str, str]:
    root = str(tmp_path_factory.mktemp("clip_guided"))
    return tiny_pipeline.tiny_vqgan(root), tiny_clip(root)


@pytest.fixture(scope="module")
def cg(dirs) -> clip_guided.ClipGuided:
    return clip_guided.ClipGuided.from_dirs(*dirs)


@pytest.fixture(scope="module")
def circle_png(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("init") / "circle.png")
    im = Image.new("RGB", (32, 32), (20, 20, 40))
    ImageDraw.Draw(im).ellipse((6, 6, 26, 26), fill=(230, 30, 30))
    im.save(path)
    return path


def _uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# (a) optimisation raises CLIP similarity; progress bar
# ----------------------------------------------------------------------------------------------------------------
def test_a_few_steps_raise_the_clip_similarity_of_every_image(cg):
    start = cg.generate(PROMPTS, seed=0, steps=0, progress=False)
    end = cg.generate(PROMPTS, seed=0, steps=20, lr=0.3, progress=False)
    assert end.images.shape == (2, 32, 32, 3) and end.images.dtype == np.uint8
    assert end.similarities.shape == (2,) and end.similarities.dtype == np.float32
    gain = end.similarities - start.similarities
    assert np.all(gain > 0.01), (start.similarities, end.similarities)
    assert not np.array_equal(start.codes, end.codes)
    # The similarity reported is CLIP's own score of the image returned (host preprocessing, as eval scores).
    emb = cg.clip.embed_images(end.images)
    text = cg.clip.embed_texts(PROMPTS)
    np.testing.assert_allclose(end.similarities, np.sum(emb * text, axis=-1), atol=1e-5)


def test_progress_bar_on_stderr(cg, capsys):
    cg.generate(PROMPTS, seed=0, steps=2, progress=True)
    err = capsys.readouterr().err
    assert "clip-guided" in err and "2/2" in err


# ----------------------------------------------------------------------------------------------------------------
# (b) the init image
# ----------------------------------------------------------------------------------------------------------------
def test_init_image_with_zero_steps_is_the_vqgan_reconstruction(cg, circle_png):
    pixels = np.asarray(Image.open(circle_png).convert("RGB"))
    result = cg.generate(PROMPTS, seed=3, steps=0, init_image=circle_png, progress=False)
    want_codes = cg.vqgan.encode(pixels[None])
    np.testing.assert_array_equal(result.codes, np.repeat(want_codes, 2, axis=0))
    np.testing.assert_array_equal(result.images, np.repeat(_uint8(cg.vqgan.decode(want_codes)), 2, axis=0))


def test_a_few_steps_from_an_init_image_stay_close_to_it(cg, circle_png):
    recon = cg.generate(PROMPTS, seed=3, steps=0, init_image=circle_png, progress=False)
    moved = cg.generate(PROMPTS, seed=3, steps=10, lr=0.3, init_image=circle_png, progress=False)
    noise = cg.generate(PROMPTS, seed=3, steps=10, lr=0.3, progress=False)
    same_codes = np.mean(moved.codes == recon.codes)
    assert 0.75 <= same_codes < 1.0, same_codes  # it moved, a little
    near = np.abs(moved.images.astype(int) - recon.images).mean()
    far = np.abs(noise.images.astype(int) - recon.images).mean()
    assert near < far / 3, (near, far)


def test_init_images_of_other_modes_and_sizes_are_converted(cg, tmp_path):
    rgb = np.zeros((64, 48, 3), np.uint8)
    rgb[:, :, 1] = np.linspace(0, 255, 48, dtype=np.uint8)[None, :]
    rgba = np.concatenate([rgb, np.full((64, 48, 1), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 1], "L").save(tmp_path / "gray.png")
    from dalle.data import images as images_lib

    for source in (str(tmp_path / "rgba.png"), str(tmp_path / "gray.png"), rgba):
        got = cg.generate(PROMPTS[:1], steps=0, init_image=source, progress=False)
        want = cg.vqgan.encode(images_lib.read_user_image(source, 32)[None])
        np.testing.assert_array_equal(got.codes, want)


# ----------------------------------------------------------------------------------------------------------------
# (c) straight-through quantisation
# ----------------------------------------------------------------------------------------------------------------
def test_what_is_decoded_is_always_codebook_vectors(cg):
    params, book, cfg = cg._vq_params, cg._book, cg.cfg
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, cfg.embed_dim)) * book.std  # off the codebook
    z_q, codes = clip_guided.quantize(z, book, cfg.l2_norm_codes)
    np.testing.assert_array_equal(z_q, np.asarray(book.vectors)[np.asarray(codes)])  # exactly, not z + (q - z)
    images, codes2 = jax.jit(lambda z: clip_guided.render(params, z, book, cfg))(z)
    np.testing.assert_array_equal(codes, codes2)
    from dalle.modeling.vqgan import model as vqgan_lib

    direct = jax.jit(vqgan_lib.VQGAN(cfg).decode_codes)(params, codes)
    np.testing.assert_allclose(images, np.clip((np.asarray(direct) + 1) / 2, 0, 1), atol=1e-5)

    # The gradient skips the rounding: d/dz equals d/dz_q of the decoder (and is not zero).
    dec = clip_guided._decoder(cfg, jnp.float32)
    g_z = jax.grad(lambda z: dec(params, clip_guided.quantize(z, book, False)[0]).sum())(z)
    g_q = jax.grad(lambda q: dec(params, q).sum())(z_q)
    assert float(jnp.abs(g_z).max()) > 0
    np.testing.assert_allclose(g_z, g_q, rtol=1e-5, atol=1e-6)


def test_returned_images_are_the_decoding_of_the_returned_codes(cg):
    r = cg.generate(PROMPTS, seed=1, steps=2, progress=False)
    np.testing.assert_array_equal(r.images, _uint8(cg.vqgan.decode(r.codes)))
    assert r.codes.dtype == np.int32 and r.codes.shape == (2, 8, 8)


def test_clamp_passes_only_gradients_that_bring_pixels_back():
    x = jnp.array([-0.5, 0.5, 1.5, -0.5, 1.5])
    g = jax.grad(lambda x: jnp.sum(clip_guided.clamp_unit(x) * jnp.array([-1.0, 1.0, -1.0, 1.0, 1.0])))(x)
    # Descent moves x by -g: pixel 0 (<0, g=-1) goes up, pixel 2 (>1, g=-1) would go further up: blocked.
    np.testing.assert_array_equal(g, [-1.0, 1.0, 0.0, 0.0, 1.0])


def test_cutouts_geometry_flip_and_noise():
    image = jax.random.uniform(jax.random.PRNGKey(0), (32, 32, 3))
    whole = clip_guided_schema.resolve(None, {"cutouts": 3, "cut_min": 1.0, "cut_max": 1.0, "flip": 0.0,
                                              "noise": 0.0})
    key = jax.random.PRNGKey(1)
    cuts = clip_guided.make_cutouts(key, image, whole, 32)
    np.testing.assert_allclose(cuts, np.broadcast_to(image, (3, 32, 32, 3)), atol=1e-6)
    flipped = clip_guided.make_cutouts(key, image, dataclasses.replace(whole, flip=1.0), 32)
    np.testing.assert_allclose(flipped, np.broadcast_to(image[:, ::-1], (3, 32, 32, 3)), atol=1e-6)
    # The whole image at CLIP's 16 px is the image resized (antialiased), not a corner of it.
    shrunk = clip_guided.make_cutouts(key, image, whole, 16)
    np.testing.assert_allclose(shrunk[0], jax.image.resize(image, (16, 16, 3), "linear"), atol=1e-5)
    # Half-side cutouts at 16 px of a ramp (pixel value = its column): 16 consecutive columns at 1 px each,
    # starting at a random offset inside the image.
    ramp = jnp.broadcast_to(jnp.arange(32.0)[None, :, None], (32, 32, 3))
    half = np.asarray(clip_guided.make_cutouts(key, ramp, dataclasses.replace(whole, cut_min=0.5, cut_max=0.5), 16))
    np.testing.assert_allclose(np.diff(half[:, :, 1:-1], axis=2), 1.0, atol=1e-4)
    assert half.min() >= 0 and half.max() <= 31 and len({round(float(c[0, 1, 0]), 3) for c in half}) == 3
    noisy = clip_guided.make_cutouts(key, image, dataclasses.replace(whole, noise=0.5), 32)
    assert 0 < float(jnp.abs(noisy - cuts).mean()) < 0.5


# ----------------------------------------------------------------------------------------------------------------
# (d) bad input
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,needle", [
    (dict(init_image="/nonexistent/init.png"), "init image '/nonexistent/init.png' does not exist"),
    (dict(steps=-1), "steps = -1 must be >= 0"),
    (dict(steps=-1, labels={"steps": "--steps"}), "--steps = -1 must be >= 0"),
    (dict(lr=0.0), "lr = 0.0 must be a finite number > 0"),
    (dict(cut_min=0.8, cut_max=0.5), "0 < cut_min <= cut_max <= 1"),
    (dict(steps="ten"), "steps = 'ten' is not a whole number"),
    (dict(size=30), "size = 30 is not a multiple of the VQGAN's downsampling factor 4"),
    (dict(num_images=0), "number of images = 0 must be a positive integer"),
    (dict(seed=-1), "seed = -1 must be an integer >= 0"),
    (dict(init_image=np.zeros((4, 4, 2), np.uint8)), "init image: an array image must be"),
    (dict(temperature=1.0), "'temperature' is not a CLIP-guided setting"),
])
def test_bad_settings_and_init_images(cg, kwargs, needle):
    with pytest.raises(clip_guided.ClipGuidedError) as e:
        cg.generate(PROMPTS, progress=False, **kwargs)
    assert needle in str(e.value)


def test_a_file_that_is_not_an_image(cg, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with pytest.raises(clip_guided.ClipGuidedError, match="init image .*notes.png' is not an image"):
        cg.generate(PROMPTS, steps=0, init_image=str(bad), progress=False)


@pytest.mark.parametrize("prompts,needle", [
    (["a red circle", "  "], "prompt 2 is empty"),
    ([""], "prompt 1 is empty"),
    ([], "non-empty list of strings"),
    ("a red circle", "non-empty list of strings"),
])
def test_bad_prompts(cg, prompts, needle):
    with pytest.raises(clip_guided.ClipGuidedError, match=needle):
        cg.generate(prompts, steps=1, progress=False)


def test_missing_model_dirs(dirs, tmp_path):
    vq_dir, clip_dir = dirs
    with pytest.raises(FileNotFoundError, match="VQGAN checkpoint .* does not exist"):
        clip_guided.ClipGuided.from_dirs(str(tmp_path / "none"), clip_dir)
    with pytest.raises(FileNotFoundError, match="CLIP checkpoint .* does not exist"):
        clip_guided.ClipGuided.from_dirs(vq_dir, str(tmp_path / "none"))
    with pytest.raises(clip_guided.ClipGuidedError, match="dtype = 'float64' must be float32, bfloat16"):
        clip_guided.ClipGuided.from_dirs(vq_dir, clip_dir, dtype="float64")


# ----------------------------------------------------------------------------------------------------------------
# (e) determinism
# ----------------------------------------------------------------------------------------------------------------
def test_same_seed_same_images_other_seed_other_images(cg):
    a = cg.generate(PROMPTS, seed=5, steps=3, progress=False)
    b = cg.generate(PROMPTS, seed=5, steps=3, progress=False)
    c = cg.generate(PROMPTS, seed=6, steps=3, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.similarities, b.similarities)
    assert not np.array_equal(a.codes, c.codes)
    # One compile per batch shape and step settings: the step's outputs feed it back without a retrace.
    assert all(fn._cache_size() == 1 for fn in cg._steps.values())


def test_each_image_draws_from_its_own_seed_prompt_and_index():
    start, steps = clip_guided.image_keys(7, 2, 3)
    start1, steps1 = clip_guided.image_keys(7, 3, 1)
    assert start.shape[0] == 6 and len({tuple(np.asarray(k).tolist()) for k in start}) == 6
    # Image 0 of prompts 0, 1 and 2 is the same whatever the number of images per prompt.
    np.testing.assert_array_equal(start[::3], start1[:2])
    np.testing.assert_array_equal(steps[::3], steps1[:2])


# ----------------------------------------------------------------------------------------------------------------
# Settings: defaults in one place, a model's section, overrides
# ----------------------------------------------------------------------------------------------------------------
def test_settings_layer_defaults_model_section_and_overrides():
    defaults = clip_guided_schema.resolve(None)
    assert defaults.to_dict() == clip_guided_schema.clip_guided_defaults().to_dict()
    config = ConfigDict({"clip_guided": {"steps": 7, "lr": 0.5}})
    s = clip_guided_schema.resolve(config, {"steps": 9, "lr": None})
    assert (s.steps, s.lr, s.cutouts) == (9, 0.5, defaults.cutouts)
    with pytest.raises(clip_guided.ClipGuidedError, match="the model's clip_guided.lr = -1"):
        clip_guided_schema.resolve(ConfigDict({"clip_guided": {"lr": -1.0}}))
    with pytest.raises(clip_guided.ClipGuidedError, match="unknown key in the model's clip_guided section: 'x'"):
        clip_guided_schema.resolve(ConfigDict({"clip_guided": {"x": 1}}))


def test_the_section_is_a_validated_config_section():
    ok = config_lib.validate(ConfigDict({"clip_guided": {"steps": 5}}))
    assert ok.clip_guided.steps == 5 and ok.clip_guided.cutouts == clip_guided_schema.clip_guided_defaults().cutouts
    with pytest.raises(config_lib.ConfigError, match="clip_guided.flip = 2.0 must be a probability"):
        config_lib.validate(ConfigDict({"clip_guided": {"flip": 2.0}}))


def test_a_vqgan_config_section_sets_the_defaults(dirs):
    from dalle.modeling.clip import model as clip_lib
    from dalle.modeling.vqgan import api as vqgan_api

    vq = vqgan_api.VQGANTokenizer.from_checkpoint(dirs[0])
    vq.config.clip_guided = ConfigDict({"steps": 0, "cutouts": 2})
    cg = clip_guided.ClipGuided(vq, clip_lib.load_clip(dirs[1]))
    assert (cg.settings().steps, cg.settings().cutouts) == (0, 2)
    used = cg.generate(PROMPTS[:1], progress=False).settings
    assert (used.steps, used.cutouts, used.lr) == (0, 2, clip_guided_schema.clip_guided_defaults().lr)
    assert cg.settings({"steps": 3}, {"steps": "--steps"}).steps == 3


# ----------------------------------------------------------------------------------------------------------------
# `dalle generate --method clip-guided`
# ----------------------------------------------------------------------------------------------------------------
def test_generate_cli_clip_guided(dirs, circle_png, tmp_path, capsys):
    from dalle import cli

    vqgan, clip = dirs
    out = tmp_path / "grid.png"
    argv = ["generate", "a red circle", "a blue square", "--method", "clip-guided", "--vqgan", vqgan, "--clip", clip,
            "--steps", "3", "--cutouts", "2", "--n", "2", "--seed", "4", "--out", str(out), "--out-dir",
            str(tmp_path / "each"), "--upscale", "1"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "clip-guided" in printed and printed.count("CLIP similarity") == 2
    scores = [[float(v) for v in line.split("CLIP similarity ")[1].split(", ")]
              for line in printed.splitlines() if "CLIP similarity" in line]
    assert all(s[0] >= s[1] for s in scores)  # best first
    assert np.asarray(Image.open(out)).shape == (2 * 32 + 3 * 2, 2 * 32 + 3 * 2, 3)
    assert sorted(os.listdir(tmp_path / "each")) == ["000_00.png", "000_01.png", "001_00.png", "001_01.png"]
    # The same images as the library gives for the same seed (prompt i uses seed + i), best similarity first.
    lib = clip_guided.ClipGuided.from_dirs(vqgan, clip).generate(["a blue square"], num_images=2, seed=5, steps=3,
                                                                cutouts=2, progress=False)
    first = np.asarray(Image.open(tmp_path / "each" / "001_00.png"))
    assert np.array_equal(first, lib.images[int(np.argmax(lib.similarities))])
    # From an init image with 0 steps: the picture's VQGAN reconstruction.
    assert cli.main(argv[:2] + argv[3:] + ["--init-image", circle_png, "--steps", "0"]) == 0


@pytest.mark.parametrize("extra, needle", [
    (["--condition-scale", "2"], "--condition-scale does not apply to --method clip-guided"),
    (["--top-k", "3", "--image-prompt", "x.png", "--keep-rows", "1"], "--top-k, --image-prompt, --keep-rows do not"),
    (["--init-image", "missing.png"], "--init-image 'missing.png' does not exist"),
    (["--steps", "-1"], "--steps = -1 must be >= 0"),
])
def test_generate_cli_clip_guided_errors(dirs, extra, needle, tmp_path, capsys):
    from dalle import cli

    vqgan, clip = dirs
    argv = ["generate", "a red circle", "--method", "clip-guided", "--vqgan", vqgan, "--clip", clip,
            "--out", str(tmp_path / "g.png")]
    assert cli.main(argv + extra) == 2
    assert needle in capsys.readouterr().err


def test_generate_cli_flags_of_clip_guided_are_refused_for_autoregressive(tmp_path, capsys):
    from dalle import cli

    assert cli.main(["generate", "a red circle", "--steps", "3", "--out", str(tmp_path / "g.png")]) == 2
    assert "--steps does not apply to --method autoregressive" in capsys.readouterr().err


def test_generate_cli_clip_guided_takes_the_models_of_a_checkpoint(dirs, tmp_path, capsys):
    """Without --vqgan/--clip: those the --checkpoint's model names (data.vqgan_checkpoint, sampling.clip_checkpoint)."""
    from dalle import cli

    vqgan, clip = dirs
    model = checkpoint.save_model(str(tmp_path / "model"), {"w": np.zeros(1, np.float32)},
                                  ConfigDict({"model": {"kind": "decoder_only"}, "data": {"vqgan_checkpoint": vqgan},
                                              "sampling": {"clip_checkpoint": clip}}))
    assert cli.main(["generate", "a red circle", "--method", "clip-guided", "--checkpoint", model, "--steps", "1",
                     "--cutouts", "1", "--out", str(tmp_path / "g.png")]) == 0, capsys.readouterr().err
    no_clip = checkpoint.save_model(str(tmp_path / "m2"), {"w": np.zeros(1, np.float32)},
                                    ConfigDict({"model": {"kind": "decoder_only"}, "data": {"vqgan_checkpoint": vqgan}}))
    assert cli.main(["generate", "a red circle", "--method", "clip-guided", "--checkpoint", no_clip, "--out",
                     str(tmp_path / "g.png")]) == 2
    assert "names no CLIP; give --clip" in capsys.readouterr().err


def test_a_dvae_directory_is_refused_by_name(dirs, tmp_path):
    from dalle.model_dir import CheckpointError

    dvae_dir = tiny_pipeline.IMAGE_TOKENIZERS["dvae"](str(tmp_path))
    with pytest.raises(CheckpointError, match="CLIP-guided generation needs a vqgan image tokenizer, but .* holds "
                                              "one of kind 'dvae'"):
        clip_guided.ClipGuided.from_dirs(dvae_dir, dirs[1])
