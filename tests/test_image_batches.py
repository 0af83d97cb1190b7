"""Image + caption batches of any source (dalle/data/image_batches.py), and the VQGAN and CLIP tasks reading them."""

from __future__ import annotations

import numpy as np
import pytest
from ml_collections import ConfigDict

from dalle import config as config_lib
from dalle.data.image_batches import TfdsImageIterator, image_batches, split_size
from tests import data_helpers as H


@pytest.fixture(scope="module")
def emoji16(tmp_path_factory):
    return H.build_tiny_emoji(str(tmp_path_factory.mktemp("emoji16")), image_size=16)


def _keys(batch):
    return [f"{k}#{i}" for k, i in zip(batch["key"], batch["caption_index"])]


def test_train_batches_shard_hosts_and_resume_exactly(emoji16):
    data = emoji16.data
    n = split_size(data, "train")
    a = image_batches(data, "train", 8, 0, 2)
    b = image_batches(data, "train", 8, 1, 2)
    batch = next(a)
    assert batch["image"].shape == (8, 16, 16, 3) and batch["image"].dtype == np.uint8
    assert {"caption", "vendor", "skin_tone", "emoji"} <= set(batch) and isinstance(batch["caption"][0], str)
    per_epoch = (n // 2) // 8
    seen_a = set(_keys(batch)) | {k for _ in range(per_epoch - 1) for k in _keys(next(a))}
    seen_b = {k for _ in range(per_epoch) for k in _keys(next(b))}
    assert not seen_a & seen_b and len(seen_a | seen_b) == 2 * per_epoch * 8  # hosts read disjoint examples
    # Exact resume, across an epoch boundary.
    state = a.get_state()
    expected = [_keys(next(a)) for _ in range(3)]
    c = image_batches(data, "train", 8, 0, 2)
    c.set_state(state)
    assert [_keys(next(c)) for _ in range(3)] == expected
    with pytest.raises(ValueError, match="process_index=1"):
        image_batches(data, "train", 8, 0, 2).set_state(b.get_state())


def test_eval_batches_are_one_ordered_pass(emoji16):
    n = split_size(emoji16.data, "validation")
    assert n >= 8
    it = image_batches(emoji16.data, "validation", 4, num_examples=8)
    first = [_keys(x) for x in it]
    assert len(first) == 2 and first == [_keys(x) for x in image_batches(emoji16.data, "validation", 4,
                                                                         num_examples=8)]


def test_shapes_make_their_own_stream_and_encoded_data_has_no_images(tmp_path):
    shapes = H.shapes_config(str(tmp_path))
    batch = next(image_batches(shapes.data, "train", 4))
    assert batch["image"].shape == (4, 32, 32, 3) and len(batch["caption"]) == 4
    encoded = config_lib.validate(ConfigDict({"data": {"source": "encoded", "image_size": 32,
                                                       "encoded_dir": str(tmp_path)}}))
    with pytest.raises(ValueError, match="holds image tokens, not images.*emoji"):
        image_batches(encoded.data, "train", 4)


def test_missing_split_names_the_dataset(emoji16):
    with pytest.raises(ValueError, match="no split 'test'"):
        TfdsImageIterator(emoji16.data, "test", 4)


def test_vqgan_and_clip_tasks_read_a_real_source(emoji16):
    from dalle.train.tasks.clip import CLIPTask
    from dalle.train.tasks.vqgan import VQGANTask
    from tests.test_vqgan_task import MODEL

    c = ConfigDict({"name": "vqgan_emoji_test", "model": MODEL, "data": emoji16.data.to_dict(),
                    "train": {"batch_size": 4, "num_steps": 1}, "mesh": {"shape": (1, 1, 1)}})
    task = VQGANTask(config_lib.validate(c))
    assert next(task.train_data(0, 1))["image"].shape == (4, 16, 16, 3)
    assert sum(b["image"].shape[0] for b in task.eval_data(0, 1)) == split_size(emoji16.data, "validation") // 4 * 4

    from dalle.tokenizers import sentencepiece as tokenizer

    caps = [str(x) for b in [next(image_batches(emoji16.data, "train", 64))] for x in b["caption"]]
    tokenizer.train_tokenizer(caps * 4, emoji16.data.tokenizer_path, 64)
    clip = config_lib.load_config("configs/clip_shapes.py", [
        "--config.data.source=emoji", f"--config.data.data_dir={emoji16.data.data_dir}",
        f"--config.data.cache_dir={emoji16.data.cache_dir}", "--config.data.image_size=16",
        f"--config.data.emoji_packages={tuple(emoji16.data.emoji_packages)}",
        "--config.data.validation_fraction=0.3", "--config.data.emoji_zero_shot_tones=2",
        "--config.data.emoji_zero_shot_styles=2", f"--config.data.tokenizer_path={emoji16.data.tokenizer_path}",
        "--config.data.vocab_size=64", "--config.model.vocab_size=64", "--config.model.image_size=16",
        "--config.train.batch_size=4", "--config.mesh.shape=(1,1,1)"])
    batch = next(CLIPTask(clip).train_data(0, 1))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["text_tokens"].shape == (4, 18)
    assert (batch["text_tokens"][:, 0] > 2).all()  # real pieces, not pad/eos/unk


def test_the_published_vqgan_finetune_recipe_reads_a_folder(tmp_path):
    """configs/vqgan_f16_16384.py:finetune takes its images from a user's folder (built by `dalle data`); shown with
    the recipe's data section and a tiny model in place of the 76 M-parameter one."""
    from PIL import Image

    from dalle.data import build
    from dalle.train.tasks.vqgan import VQGANTask
    from tests.test_vqgan_task import MODEL

    for i in range(12):
        Image.new("RGB", (40, 30), (20 * i, 100, 200 - 10 * i)).save(tmp_path / f"im{i}.png")
        (tmp_path / f"im{i}.txt").write_text(f"picture {i}")
    c = config_lib.load_config("configs/vqgan_f16_16384.py:finetune", [
        f"--config.data.path={tmp_path}", f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.data.image_size=16", "--config.train.batch_size=4"], validate_config=False)
    c.mesh = ConfigDict({"shape": (1, 1, 1)})  # batch 4 on one of the 8 test devices
    c = config_lib.validate(c)
    assert c.data.source == "folder"
    build.build_dataset(c.data)
    tiny = ConfigDict(c.to_dict())
    tiny.model = ConfigDict(MODEL)
    tiny.vqgan_loss.finetune_from = ""
    batch = next(VQGANTask(config_lib.validate(tiny)).train_data(0, 1))
    assert batch["image"].shape == (4, 16, 16, 3)


def test_tokenizer_quality_bench_measures_on_the_sources_validation_images(emoji16):
    from benchmarks.bench_vqgan_quality import validation_images

    n = split_size(emoji16.data, "validation")
    images = validation_images(emoji16.data, 1000)  # more than there are: all of them
    assert images.shape == (n, 16, 16, 3) and images.dtype == np.uint8
    first = next(image_batches(emoji16.data, "validation", n, num_examples=n))["image"]
    np.testing.assert_array_equal(images, first)  # the split's own images, in its order
    np.testing.assert_array_equal(validation_images(emoji16.data, 3), first[:3])
