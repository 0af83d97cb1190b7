"""tools/code_coverage.py: object tokens whose code never (or rarely) is a training target."""

import numpy as np

from tools import code_coverage


def test_scene_stats_counts_unseen_and_rare_object_codes():
    counts = np.zeros(10, np.int64)
    counts[[0, 1]] = 100  # backgrounds / common codes
    counts[2] = 3  # rare
    tokens = np.array([[0, 0, 0, 1, 2],    # objects at 1 (seen), 2 (rare)
                       [0, 0, 0, 5, 5],    # objects at 5, 5 (unseen)
                       [7, 7, 7, 7, 1]])   # code 7 is unseen but covers no object; object 1 seen
    obj = np.zeros(tokens.shape, bool)
    obj[0, 3:] = obj[1, 3:] = obj[2, 4] = True
    s = code_coverage.scene_stats(tokens, counts, obj)
    assert s["scenes"] == 3
    assert s["object_tokens"] == (2 + 2 + 1) / 3
    assert s["unseen_tokens"] == 2 / 5 and s["rare_tokens"] == 3 / 5
    assert s["per_scene_unseen"].tolist() == [False, True, False]
    assert abs(s["scenes_with_unseen"] - 1 / 3) < 1e-9


def test_object_mask_marks_the_cells_an_object_covers():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[0, 0:2, 6:8] = (255, 0, 0)  # top-right cell of a 4x4 grid (2 px cells)
    images[1] = 200  # a grey background...
    images[1, 3:5, 3:5] = (0, 0, 255)  # ...with an object across the four centre cells
    mask = code_coverage.object_mask(images, 4).reshape(2, 4, 4)
    assert mask[0].sum() == 1 and mask[0, 0, 3]
    assert mask[1].sum() == 4 and mask[1, 1:3, 1:3].all()


def test_render_names_every_split():
    split = {"object_tokens": 4.0, "unseen_tokens": 0.1, "rare_tokens": 0.2, "scenes_with_unseen": 0.3,
             "held_out": {}}
    r = {"codes": 16, "codes_in_training": 12,
         "splits": {"validation": split, "zero_shot": dict(split, held_out={"red star": 0.5})}}
    text = code_coverage.render(r, "cmd", 8)
    assert "12 of the 16 codes" in text and "| zero_shot | 4.0 | 10.0% | 20.0% | 30.0% |" in text
    assert "red star 50%" in text


def test_training_code_counts_cover_every_target_token(tmp_path):
    from dalle.data import encode as encode_lib
    from tests import tiny_pipeline

    config = tiny_pipeline.tiny_config(str(tmp_path))
    info = encode_lib.read_info(config.data.encoded_dir)
    counts = code_coverage.training_code_counts(config.data.encoded_dir, tiny_pipeline.CODES)
    examples = sum(1 for _ in encode_lib.dataset_from_files(
        encode_lib.split_files(config.data.encoded_dir, "train", info), info["format"], int(info["image_length"])))
    assert counts.shape == (tiny_pipeline.CODES,) and examples > 0
    assert counts.sum() == examples * int(info["image_length"])
