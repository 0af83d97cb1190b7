"""tools/code_coverage.py: object tokens whose code never (or rarely) is a training target."""

import numpy as np
import pytest

from dalle.data import schema as S
from dalle.data import shapes as shapes_lib
from tools import code_coverage


def multi_data() -> dict:
    """The multi-object world of configs/shapes_tiny.py:multi (1-3 objects, 32 px, the default held-out pairs)."""
    d = S.data_defaults().to_dict()
    d.update(max_objects=3, image_size=32)
    return d


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


def test_object_cells_are_each_objects_own():
    world = shapes_lib.ShapesWorld.from_config(multi_data())
    scene = shapes_lib.Scene((shapes_lib.ShapeObject("red", "star", "large", 0),
                              shapes_lib.ShapeObject("blue", "circle", "small", 8)))
    cells = code_coverage.object_cells(world, scene, 8)
    assert cells.shape == (2, 64) and cells[0].any() and cells[1].any()
    assert not (cells[0] & cells[1]).any()
    whole = code_coverage.object_mask(world.render(scene)[None], 8)[0]
    assert (cells.any(0) <= whole).all()
    grid = cells.reshape(2, 8, 8)
    assert grid[0, :3, :3].any() and not grid[0, 4:].any() and grid[1, 5:, 5:].any() and not grid[1, :4].any()


def test_object_tokens_list_each_objects_codes_with_its_colour_and_shape():
    world = shapes_lib.ShapesWorld.from_config(multi_data())
    scene = shapes_lib.Scene((shapes_lib.ShapeObject("red", "star", "large", 0),
                              shapes_lib.ShapeObject("blue", "circle", "small", 8)))
    cells = code_coverage.object_cells(world, scene, 8)
    codes = np.arange(64)[None]  # code = cell index
    toks = code_coverage.object_tokens(world, [scene], codes, 8)
    red, star = world.colors.index("red"), world.shapes.index("star")
    blue, circle = world.colors.index("blue"), world.shapes.index("circle")
    expected = sorted([(int(i), red, star, 0) for i in np.flatnonzero(cells[0])]
                      + [(int(i), blue, circle, 1) for i in np.flatnonzero(cells[1])])
    assert sorted(map(tuple, toks.tolist())) == expected
    only_blue = code_coverage.object_tokens(world, [scene], codes, 8, keep=lambda o: o.color == "blue")
    assert set(only_blue[:, 1].tolist()) == {blue} and len(only_blue) == cells[1].sum()
    assert set(only_blue[:, 3].tolist()) == {0}  # numbered among the kept objects


def test_sharing_stats_say_which_word_reaches_each_code():
    rare = code_coverage.RARE
    # Training object tokens (code, colour, shape, object): code 0 only in colour 0 (shapes 1 and 2); code 1 only in shape 0
    # (colours 1 and 2); code 2 in colour 0 and in shape 0 (different objects); code 3 in colour 1 shape 1; code 4
    # never in an object.
    train = np.array([(0, 0, 1, 0)] * rare + [(0, 0, 2, 1)] * rare + [(1, 1, 0, 2)] * rare + [(1, 2, 0, 3)] * rare
                     + [(2, 0, 1, 4)] * rare + [(2, 1, 0, 5)] * rare + [(3, 1, 1, 6)] * 2 * rare)
    by_color, by_shape = code_coverage.attribute_counts(train, 5, 3, 3)
    assert by_color.sum() == len(train) and by_color[0].tolist() == [2 * rare, 0, 0]
    # Tokens of a held-out colour 0 + shape 0 object: codes 0 (colour only), 1 (shape only), 2 (both), 3 (neither),
    # 4 (never in a training object); the first three tokens are one object, the last two another.
    held = np.array([(0, 0, 0, 0), (1, 0, 0, 0), (2, 0, 0, 0), (3, 0, 0, 1), (4, 0, 0, 1)])
    s = code_coverage.sharing_stats(by_color, by_shape, held)
    assert s["tokens"] == 5
    assert (s["both"], s["color_only"], s["shape_only"], s["neither"]) == (0.2, 0.2, 0.2, 0.4)
    assert s["never_in_an_object"] == 0.2
    assert s["objects"] == 2 and s["objects_reachable"] == 0.5  # the first object's codes all reach a word
    # Shares: code 0 all in colour 0, code 1 none, code 2 half, code 3 none, code 4 has no uses (counted as 0).
    assert abs(s["color_share"] - (1 + 0 + 0.5 + 0 + 0) / 5) < 1e-9
    assert abs(s["shape_share"] - (0 + 1 + 0.5 + 0 + 0) / 5) < 1e-9
    assert code_coverage.sharing_stats(by_color, by_shape, np.zeros((0, 4), np.int64)) == {"tokens": 0}


def test_render_names_every_split_and_tokenizer():
    split = {"object_tokens": 4.0, "unseen_tokens": 0.1, "rare_tokens": 0.2, "scenes_with_unseen": 0.3,
             "held_out": {}}
    share = {"tokens": 40, "color_share": 0.5, "shape_share": 0.25, "both": 0.1, "color_only": 0.2,
             "shape_only": 0.3, "neither": 0.4, "never_in_an_object": 0.05, "objects": 7, "objects_reachable": 0.5}
    r = {"codes": 16, "codes_in_training": 12, "train_scenes": 100,
         "splits": {"validation": split, "zero_shot": dict(split, held_out={"red star": 0.5})},
         "sharing": {"validation objects": share, "held-out-pair objects": {"tokens": 0}}}
    text = code_coverage.render([("VQGAN", r), ("dVAE", r)], "cmd", 8)
    assert "| dVAE | zero_shot | 12 of 16 | 4.0 | 10.0% | 20.0% | 30.0% |" in text
    assert "VQGAN: red star 50%; dVAE: red star 50%" in text
    assert ("| VQGAN | validation objects | 40 | 50.0% | 25.0% | 10.0% | 20.0% | 30.0% | 40.0% | 5.0% | 50.0% of 7 |"
            in text)
    assert "held-out-pair objects |" not in text  # a group without tokens has no row
    assert text.startswith(f"## {code_coverage.TITLE}\n")
    assert code_coverage.render([("VQGAN", r)], "cmd", 8, title="Other world").startswith("## Other world\n")


def test_measure_on_a_tiny_dvae_pipeline(tmp_path):
    from tests import tiny_pipeline

    config = tiny_pipeline.tiny_config(str(tmp_path), image_tokenizer="dvae")
    r = code_coverage.measure(config.data, config.data.encoded_dir, config.data.vqgan_checkpoint,
                              prompts_per_split=6, train_scenes=20)
    assert r["codes"] == tiny_pipeline.CODES and r["train_scenes"] == 20
    assert 0 < r["codes_in_train_objects"] <= r["codes_in_training"] <= r["codes"]
    assert set(r["splits"]) == set(code_coverage.SPLITS) and r["splits"]["validation"]["scenes"] == 6
    for group in code_coverage.GROUPS:
        g = r["sharing"][group]
        assert g["tokens"] > 0, group  # every zero_shot scene holds a held-out pair's object
        assert abs(g["both"] + g["color_only"] + g["shape_only"] + g["neither"] - 1) < 1e-9
        assert 0 <= g["color_share"] <= 1 and 0 <= g["shape_share"] <= 1
    # the held-out group holds held-out pairs' objects only; validation objects are never of one
    world = shapes_lib.ShapesWorld.from_config(config.data)
    held = lambda pair: any(d.matches(shapes_lib.ShapeObject(*pair.split(), "small", 0))
                            for d in world.held_out_pairs)
    held_out_pairs = r["sharing"]["held-out-pair objects"]["pairs"]
    assert held_out_pairs and all(map(held, held_out_pairs))
    assert not any(map(held, r["sharing"]["validation objects"]["pairs"]))
    with pytest.raises(ValueError, match="train split .* has"):
        code_coverage.measure(config.data, config.data.encoded_dir, config.data.vqgan_checkpoint, 2,
                              train_scenes=int(config.data.train_size) + 1)
    other = dict(config.data.to_dict(), train_size=int(config.data.train_size) + 5)
    with pytest.raises(ValueError, match="give --data the config the model trained with"):
        code_coverage.measure(other, config.data.encoded_dir, config.data.vqgan_checkpoint, 2)


def test_main_writes_the_section_it_is_given(tmp_path, monkeypatch):
    from tests import tiny_pipeline
    from tools import eval_report

    config = tiny_pipeline.tiny_config(str(tmp_path), image_tokenizer="dvae")
    data_config = tmp_path / "world.py"
    data_config.write_text("from ml_collections import ConfigDict\n\n\ndef get_config(arg=None):\n"
                           f"    return ConfigDict({{'data': {config.data.to_dict()!r}}})\n")
    written = {}
    monkeypatch.setattr(eval_report, "write_section", lambda name, body, target="": written.update({name: body}))
    assert code_coverage.main(["--data", str(data_config), "--tokenizer", "tiny dVAE", config.data.encoded_dir,
                               config.data.vqgan_checkpoint, "--prompts", "3", "--train_scenes", "10",
                               "--section", "codes-b", "--title", "Another world"]) == 0
    assert list(written) == ["codes-b"] and written["codes-b"].startswith("## Another world\n")
    assert '"tiny dVAE"' in written["codes-b"]  # the command shown quotes a name with a space
