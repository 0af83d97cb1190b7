"""The Python API: `from dalle import Generator` (lazy: `import dalle` stays light), `Generator.from_pretrained` on
every kind of directory, `g(prompt, n, seed)` with the model's sampling section, and README.md's example run
exactly as written on a tiny model."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dalle import cli, generation
from dalle import model_dir as checkpoint
from tests import published_layouts as layouts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MODEL = "weights/dalle_mini"  # the path README.md's example loads


def readme_example() -> str:
    """The first python code block of README.md's "Python API" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(raw dalle-mini dir with its VQGAN beside it, its `dalle convert dalle-mini` output)."""
    root = tmp_path_factory.mktemp("api")
    src = layouts.tiny_dalle_mini(str(root / "downloads"))
    out = str(root / "dalle_mini")
    assert cli.main(["convert", "dalle-mini", "--from", src, "--out", out]) == 0
    return src, out


def test_import_dalle_is_light_and_generator_is_imported_on_first_use():
    code = ("import sys, dalle\n"
            "assert 'jax' not in sys.modules and 'dalle.generation' not in sys.modules, sorted(sys.modules)\n"
            "from dalle import Generator\n"
            "import dalle.generation\n"
            "assert Generator is dalle.generation.Generator and 'Generator' in dir(dalle)\n"
            "try:\n    dalle.Nope\nexcept AttributeError as e:\n    assert 'Nope' in str(e)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_readme_example_runs_as_written(tiny):
    code = readme_example()
    assert f'"{README_MODEL}"' in code, code
    namespace: dict = {}
    exec(compile(code.replace(README_MODEL, tiny[1]), "README.md", "exec"), namespace)
    images = namespace["images"]
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape == (4, 16, 16, 3)
    assert namespace["g"].dtype == "bfloat16"


def test_from_pretrained_reads_a_raw_dalle_mini_dir_a_model_dir_and_a_workdir(tiny, tmp_path):
    src, out = tiny
    raw = generation.Generator.from_pretrained(src, dtype="bfloat16")  # converted in memory
    assert not os.path.exists(os.path.join(src, "params"))  # nothing written next to the download
    converted = generation.Generator.from_pretrained(out, dtype="bfloat16")
    np.testing.assert_array_equal(raw("a red circle", n=2, seed=0), converted("a red circle", n=2, seed=0))

    workdir = tmp_path / "run"
    shutil.copytree(out, workdir / "model")  # a finished training run: its exported model
    (workdir / "config.json").write_text(open(os.path.join(out, "config.json")).read())
    from_workdir = generation.Generator.from_pretrained(str(workdir))
    assert from_workdir("a red circle", n=1, seed=0).shape == (1, 16, 16, 3)

    with pytest.raises(generation.GenerationError, match="does not exist"):
        generation.Generator.from_pretrained(str(tmp_path / "nowhere"))
    lone = layouts.tiny_dalle_mini(str(tmp_path / "lone"), vqgan_place="none")
    with pytest.raises(generation.GenerationError, match="no VQGAN found .* pass --vqgan DIR"):
        generation.Generator.from_pretrained(lone)
    assert generation.Generator.from_pretrained(lone, vqgan=os.path.join(out, "vqgan")).vqgan.codebook_size == 40


def test_call_samples_with_the_model_sampling_section(tiny, tmp_path, monkeypatch):
    tuned = str(tmp_path / "tuned")
    shutil.copytree(tiny[1], tuned)
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    checkpoint.set_config_section(tuned, "sampling", dict(guidance=1.5, temperature=1.0, top_k=8, candidates=3,
                                                          keep=2, clip_checkpoint=str(clip_dir)))
    asked = []

    def reversed_order(directory, unknown_words=None):  # a stand-in CLIP that ranks the last candidate first
        asked.append(directory)
        assert unknown_words == "keep"  # the image model's data.unknown_words: the CLIP reads prompts as it does
        return lambda prompt, images: list(reversed(range(len(images))))

    monkeypatch.setattr(generation, "load_reranker", reversed_order)
    g = generation.Generator.from_pretrained(tuned)
    sampled = g.images(["a red circle"], num_images=3, seed=1, condition_scale=1.5, temperature=1.0, top_k=8,
                       top_p=1.0)
    kept = g("a red circle", seed=1)  # keep 2 of 3 candidates, ranked by the section's CLIP
    assert asked == [str(clip_dir)]
    np.testing.assert_array_equal(kept, sampled[[2, 1]])
    first = g("a red circle", n=1, seed=1, clip="")  # no reranking: the first sample, the same whatever n
    np.testing.assert_array_equal(first, sampled[:1])
    assert not np.array_equal(g("a red circle", n=1, seed=1, clip="", condition_scale=3.0), first)
    with pytest.raises(generation.GenerationError, match="n = 0 must be a positive integer"):
        g("a red circle", n=0)
    with pytest.raises(generation.GenerationError, match="prompt must be one string"):
        g(["a red circle", "a blue square"])
