"""The `yfcc100m` source (dalle.data.builders.yfcc): OpenAI's CLIP subset list joined with YFCC100M metadata, on
tiny files written here (no network)."""

from __future__ import annotations

import bz2
import io
import os

import numpy as np
import pytest
from PIL import Image

from dalle import config as config_lib
from dalle.data import build
from dalle.data.builders import yfcc
from dalle.data.builders._real import split_of

SIZE = 16
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "real_data.py")


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.broadcast_to(np.asarray(color, np.uint8), (20, 24, 3)).copy()).save(buf, format="PNG")
    return buf.getvalue()


def _meta_row(line: int, photo_id: int, title: str, description: str, video: bool = False) -> str:
    """One row of the 25-column yfcc100m_dataset layout (the columns the builder reads are filled in)."""
    row = [""] * 25
    row[0], row[1], row[2] = str(line), str(photo_id), _hash(photo_id)
    row[3], row[4] = "12345678@N00", "someone"
    row[8], row[9] = title, description
    row[15] = f"http://www.flickr.com/photos/12345678@N00/{photo_id}/"
    row[16] = _url(photo_id)
    row[17] = "Attribution License"
    row[23] = "jpg"
    row[24] = "1" if video else "0"
    return "\t".join(row)


def _hash(photo_id: int) -> str:
    return f"{photo_id:032x}"[::-1].replace("0", "a")  # a fake 32-hex photo hash, different from the id


def _url(photo_id: int) -> str:
    return f"http://farm1.staticflickr.com/1/{photo_id}_s3cr3t.jpg"


def _stem(photo_id: int, naming: str) -> str:
    return {"photo_id": str(photo_id), "hash": _hash(photo_id).upper(), "basename": f"{photo_id}_s3cr3t"}[naming]


COLORS = {101: (255, 0, 0), 102: (0, 0, 255), 105: (0, 255, 0), 201: (255, 255, 0)}


def _write(tmp_path, naming: str, compress: bool) -> tuple[str, str, str]:
    """Subset list, metadata and images: 101 and 102 become examples; every other row is dropped for a reason."""
    subset = ["0\t101\t" + _hash(101), "1\t102\t" + _hash(102), "2\t103\t" + _hash(103), "3\t104\t" + _hash(104),
              "4\t105\t" + _hash(105), "5\t106\t" + _hash(106),  # 106: no metadata row
              "not a row"]  # bad_row
    meta = [
        _meta_row(0, 101, "A+day+at+the+beach%21",
                  "Sunny+%3Cb%3Eday%3C%2Fb%3E+with+%3Ca+href%3D%22http%3A%2F%2Fx.org%22%3Efriends%3C%2Fa%3E%0A%0A"
                  "fish+%26amp%3B+chips"),
        _meta_row(1, 102, "IMG_1234", "A+red+car+parked+outside"),  # camera title dropped
        _meta_row(2, 103, "My+holiday+video", "", video=True),  # video
        _meta_row(3, 104, "Not+downloaded", "nobody+fetched+it"),  # missing_image
        _meta_row(4, 105, "DSC01234", ""),  # empty_caption
        _meta_row(5, 201, "Not+in+the+subset", "but+downloaded"),  # not in the subset: ignored
        _meta_row(6, 202, "A+video+not+in+the+subset", "", video=True),  # ignored, not counted
        "7\t107\ttoo\tfew\tcolumns",  # bad_row
    ]
    (tmp_path / "subset.tsv").write_text("\n".join(subset) + "\n")
    meta_text = "\n".join(meta) + "\n"
    if compress:
        meta_path = tmp_path / "yfcc100m_dataset.bz2"
        meta_path.write_bytes(bz2.compress(meta_text.encode()))
    else:
        meta_path = tmp_path / "yfcc100m_dataset"
        meta_path.write_text(meta_text)
    images = tmp_path / "images" / "00"
    images.mkdir(parents=True)
    for photo_id, color in COLORS.items():
        (images / f"{_stem(photo_id, naming)}.png").write_bytes(_png(color))
    return str(tmp_path / "subset.tsv"), str(meta_path), str(tmp_path / "images")


def _config(tmp_path, *overrides: str):
    return config_lib.load_config(f"{CONFIG}:yfcc100m", [
        f"--config.data.image_size={SIZE}", "--config.data.min_image_side=8",
        f"--config.data.data_dir={tmp_path / 'tfds'}", *overrides])


def _read(data_config) -> dict[str, tuple[np.ndarray, str]]:
    import tensorflow_datasets as tfds

    builder = build.load_builder(data_config)
    out = {}
    for split in builder.info.splits:
        for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            out[ex["key"].decode()] = (ex["image"], ex["caption"].decode())
    return out


# --------------------------------------------------------------------------------------------------------------
def test_caption_cleaning():
    cap = yfcc.caption_of(
        "A+day+at+the+beach%21",
        "Sunny+%3Cb%3Eday%3C%2Fb%3E+with+%3Ca+href%3D%22http%3A%2F%2Fx.org%22%3Efriends%3C%2Fa%3E%0A%0Afish+%26amp%3B"
        "+chips")
    assert cap == "A day at the beach! Sunny day with friends fish & chips"  # "!" ends the title: no ". "
    assert yfcc.caption_of("Golden+Gate", "seen+from++the%09north") == "Golden Gate. seen from the north"
    assert yfcc.caption_of("Golden+Gate", "") == "Golden Gate"
    assert yfcc.caption_of("", "only+a+description") == "only a description"
    assert yfcc.caption_of("IMG_1234", "a+red+car") == "a red car"
    assert yfcc.caption_of("Dog", "dog") == "Dog"  # a description repeating the title adds nothing
    assert yfcc.caption_of("P1010001", "") == ""
    assert yfcc.caption_of("%3Cp%3E+%3C%2Fp%3E", "+++") == ""
    assert yfcc.clean_text("1+%3C+2+and+3+%3E+2") == "1 < 2 and 3 > 2"  # not tags
    assert yfcc.clean_text("%26lt%3Bb%26gt%3B") == "<b>"  # escaped markup is text


@pytest.mark.parametrize("title", ["IMG_1234", "img_1234.jpg", "DSC01234", "DSCN0042.JPG", "DSCF1234", "P1010001",
                                   "_MG_1234", "IMG-20140101-WA0001", "100_1234", "CIMG0001", "GOPR0042", "1234"])
def test_camera_default_titles_are_dropped(title):
    assert yfcc.is_camera_default(title)


@pytest.mark.parametrize("title", ["Paris 2012", "Image of a cat", "DSC", "Sam", "IMG_1234 my dog", "Pier 39"])
def test_real_titles_are_kept(title):
    assert not yfcc.is_camera_default(title)


@pytest.mark.parametrize("naming,compress", [("photo_id", False), ("hash", True), ("basename", False)])
def test_yfcc_builder(tmp_path, naming, compress):
    subset, meta, images = _write(tmp_path, naming, compress)
    assert split_of("101", 0.5) == "train" and split_of("102", 0.5) == "validation"  # both splits are built
    dc = _config(tmp_path, f"--config.data.path={subset}", f"--config.data.yfcc_metadata={meta}",
                 f"--config.data.images_dir={images}", f"--config.data.yfcc_image_naming={naming}",
                 "--config.data.validation_fraction=0.5").data
    result = build.build_dataset(dc)
    assert result["examples"] == 2
    assert result["splits"] == {"train": 1, "validation": 1}
    # Row-level counts are taken once, although the metadata is read once per split.
    assert result["skipped"] == {"bad_row": 2, "video": 1, "missing_image": 1, "empty_caption": 1,
                                 "missing_metadata": 1}
    rows = _read(dc)
    assert sorted(rows) == ["101", "102"]
    assert rows["101"][1] == "A day at the beach! Sunny day with friends fish & chips"
    assert rows["102"][1] == "A red car parked outside"
    for key in rows:  # the image joined to each photo is its own
        np.testing.assert_array_equal(rows[key][0][SIZE // 2, SIZE // 2], COLORS[int(key)])


def test_missing_files_and_wrong_layout_name_the_key(tmp_path):
    subset, meta, images = _write(tmp_path, "photo_id", False)
    base = [f"--config.data.path={subset}", f"--config.data.images_dir={images}"]
    missing = str(tmp_path / "nope" / "yfcc100m_dataset")
    with pytest.raises(ValueError, match=f"data.yfcc_metadata '{missing}' is not a file"):
        build.build_dataset(_config(tmp_path, *base, f"--config.data.yfcc_metadata={missing}").data)
    with pytest.raises(ValueError, match="building needs data.yfcc_metadata"):
        build.build_dataset(_config(tmp_path, *base).data)
    # The Yahoo Webscope files lack the line number and hash columns.
    webscope = tmp_path / "yfcc100m_dataset-0"
    webscope.write_text("\t".join(_meta_row(0, 101, "t", "d").split("\t")[:1] + ["x"] * 22) + "\n")
    with pytest.raises(ValueError, match="23 columns"):
        build.build_dataset(_config(tmp_path, *base, f"--config.data.yfcc_metadata={webscope}").data)


def test_bad_naming_is_a_config_error(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="data.yfcc_image_naming = 'sha1' is not one of photo_id, hash"):
        _config(tmp_path, "--config.data.yfcc_image_naming=sha1")
    assert _config(tmp_path).data.yfcc_image_naming == "photo_id"
