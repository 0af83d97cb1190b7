"""Real-data tfds builders on tiny data written here, corrupt files included (dalle.data.builders.*, dalle.data.build)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from dalle import config as config_lib
from dalle.data import build, images

SIZE = 24


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _solid(color, w=40, h=30) -> np.ndarray:
    return np.broadcast_to(np.asarray(color, np.uint8), (h, w, 3)).copy()


def _good_images() -> dict[str, tuple[bytes, str, str]]:
    """name -> (encoded bytes, extension, caption): 4 usable images, two needing conversion."""
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:, :16, 3] = 0  # transparent half -> white
    gray = np.full((32, 48), 90, np.uint8)
    return {
        "red": (_png(_solid((255, 0, 0))), "png", "A red  square"),
        "blue": (_jpeg(_solid((0, 0, 255), 50, 40)), "jpg", "a blue thing"),
        "alpha": (_png(rgba, "RGBA"), "png", "half transparent"),
        "gray": (_png(gray, "L"), "png", "a gray image"),
    }


def _bad_images() -> dict[str, tuple[bytes, str, str, str]]:
    """name -> (bytes, extension, caption, expected skip reason)."""
    big = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return {
        "truncated": (_png(big)[:300], "png", "cut short", "truncated"),
        "garbage": (b"this is not an image at all" * 4, "jpg", "garbage bytes", "unreadable"),
        "tiny": (_png(_solid((0, 255, 0), 4, 4)), "png", "too small", "too_small"),
    }


def _noise(side: int) -> np.ndarray:
    return np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)


def _data_config(**kw) -> ConfigDict:
    c = config_lib.validate(ConfigDict({"data": {"image_size": SIZE, "min_image_side": 8,
                                                 "validation_fraction": 0.0, **kw}}))
    return c.data


def _read(data_config, split="train") -> dict[str, tuple[np.ndarray, str]]:
    import tensorflow_datasets as tfds

    builder = build.load_builder(data_config)
    out = {}
    for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
        out[ex["key"].decode() if isinstance(ex["key"], bytes) else ex["key"]] = (
            ex["image"], ex["caption"].decode() if isinstance(ex["caption"], bytes) else ex["caption"])
    return out


# --------------------------------------------------------------------------------------------------------------
def test_load_image_center_crop_bicubic_matches_pil():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
    out = images.load_image(_png(arr), 16)
    expected = np.asarray(Image.fromarray(arr).crop((10, 0, 40, 30)).resize((16, 16), Image.BICUBIC))
    np.testing.assert_array_equal(out, expected)


def test_load_image_counts_reasons():
    stats = images.BuildStats()
    for name, (data, _, _, reason) in _bad_images().items():
        assert images.load_image(data, SIZE, min_side=8, stats=stats, where=name) is None, name
    assert images.load_image("/nonexistent/x.png", SIZE, stats=stats) is None
    assert dict(stats.skipped) == {"truncated": 1, "unreadable": 1, "too_small": 1, "missing_image": 1}
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent -> white
    out = images.load_image(_png(rgba, "RGBA"), 10, stats=stats)
    assert out.shape == (10, 10, 3) and out.min() == 255
    assert stats.converted["alpha_RGBA"] == 1


def _write_folder(root) -> None:
    for name, (data, ext, caption) in _good_images().items():
        (root / f"{name}.{ext}").write_bytes(data)
        (root / f"{name}.txt").write_text(caption)
    for name, (data, ext, caption, _) in _bad_images().items():
        (root / f"{name}.{ext}").write_bytes(data)
        (root / f"{name}.txt").write_text(caption)
    (root / "sub").mkdir()
    (root / "sub" / "nocaption.png").write_bytes(_png(_solid((1, 2, 3))))
    (root / "sub" / "emptycaption.png").write_bytes(_png(_solid((1, 2, 3))))
    (root / "sub" / "emptycaption.txt").write_text("  \n")


def test_folder_builder_skips_and_counts(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    _write_folder(src)
    dc = _data_config(source="folder", path=str(src), data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["examples"] == 4
    assert result["skipped"] == {"truncated": 1, "unreadable": 1, "too_small": 1,
                                 "missing_caption": 1, "empty_caption": 1}
    assert result["converted"] == {"alpha_RGBA": 1, "mode_L": 1}
    listed = {(w, r) for w, r in result["problems"]}
    assert (os.path.join("sub", "nocaption.png"), "missing_caption") in listed
    assert (os.path.join("sub", "emptycaption.png"), "empty_caption") in listed
    with open(os.path.join(result["data_dir"], "build_stats.json")) as f:
        assert json.load(f)["skipped_total"] == 5
    rows = _read(dc)
    assert sorted(rows) == ["alpha.png", "blue.jpg", "gray.png", "red.png"]
    img, caption = rows["red.png"]
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[SIZE // 2, SIZE // 2], [255, 0, 0])
    assert caption == "A red  square"  # raw: normalization happens in the tasks
    alpha = rows["alpha.png"][0]
    assert tuple(alpha[SIZE // 2, 1]) == (255, 255, 255) and tuple(alpha[SIZE // 2, -2]) == (200, 0, 0)
    assert np.all(rows["gray.png"][0] == 90)
    # Rebuilding is a no-op; the stats come back from the tfds metadata.
    again = build.build_dataset(dc)
    assert again["already_built"] and again["examples"] == 4 and again["skipped_total"] == 5


def test_validation_split_is_stable(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(30):
        (src / f"{i:03d}.png").write_bytes(_png(_solid((i * 8, 0, 0))))
        (src / f"{i:03d}.txt").write_text(f"caption {i}")
    dc = _data_config(source="folder", path=str(src), data_dir=str(tmp_path / "tfds"), validation_fraction=0.3)
    result = build.build_dataset(dc)
    train, val = _read(dc, "train"), _read(dc, "validation")
    assert len(train) + len(val) == 30 and result["splits"] == {"train": len(train), "validation": len(val)}
    assert 0 < len(val) < 30 and not set(train) & set(val)
    from dalle.data.builders._real import split_of

    assert all(split_of(k, 0.3) == "validation" for k in val)


def test_csv_builder(tmp_path):
    src = tmp_path / "d"
    (src / "img").mkdir(parents=True)
    rows = [("path", "caption")]
    for name, (data, ext, caption) in _good_images().items():
        (src / "img" / f"{name}.{ext}").write_bytes(data)
        rows.append((f"img/{name}.{ext}", caption))
    for name, (data, ext, caption, _) in _bad_images().items():
        (src / "img" / f"{name}.{ext}").write_bytes(data)
        rows.append((f"img/{name}.{ext}", caption))
    rows.append(("img/missing.png", "never downloaded"))
    rows.append(("img/red.png", ""))  # empty caption
    rows.append(("onlyonecolumn",))
    with open(src / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    dc = _data_config(source="csv", path=str(src / "index.csv"), data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["examples"] == 4
    assert result["skipped"] == {"truncated": 1, "unreadable": 1, "too_small": 1, "missing_image": 1,
                                 "empty_caption": 1, "bad_row": 1}
    captions = sorted(c for _, c in _read(dc).values())
    assert captions == sorted(c for _, _, c in _good_images().values())


def _write_tar(path, entries) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_builder(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    good, bad = _good_images(), _bad_images()
    entries = []
    for i, (name, (data, ext, caption)) in enumerate(good.items()):
        entries += [(f"{i:09d}.{ext}", data), (f"{i:09d}.txt", caption.encode()),
                    (f"{i:09d}.json", json.dumps({"caption": caption}).encode())]
    _write_tar(shards / "00000.tar", entries)
    entries = []
    for i, (name, (data, ext, caption, _)) in enumerate(bad.items()):
        entries += [(f"1{i:08d}.{ext}", data), (f"1{i:08d}.txt", caption.encode())]
    entries += [("200000000.jpg", good["blue"][0]), ("200000000.json", b'{"caption": "from json"}')]
    entries += [("200000001.jpg", good["blue"][0])]  # no caption at all
    _write_tar(shards / "00001.tar", entries)
    # A shard cut in the middle: the sample before the damage survives, the shard is counted as corrupt.
    _write_tar(shards / "00002.tar", [("300000000.png", good["red"][0]), ("300000000.txt", b"before damage"),
                                      ("300000001.png", _png(bad["truncated"][0] and _noise(96)))])
    full = (shards / "00002.tar").read_bytes()
    (shards / "00002.tar").write_bytes(full[: 4096 + 8192])  # inside the 27 KB noise image
    dc = _data_config(source="webdataset", path=str(shards), data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["skipped"] == {"truncated": 1, "unreadable": 1, "too_small": 1, "missing_caption": 1,
                                 "corrupt_shard": 1}
    captions = sorted(c for _, c in _read(dc).values())
    assert captions == sorted([c for _, _, c in good.values()] + ["from json", "before damage"])
    assert result["examples"] == 6


def test_parquet_builder(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    good, bad = _good_images(), _bad_images()
    jpg = [d for d, _, _ in good.values()] + [d for d, _, _, _ in bad.values()] + [None, good["red"][0]]
    caption = [c for _, _, c in good.values()] + [c for _, _, c, _ in bad.values()] + ["failed", "failed too"]
    status = ["success"] * (len(jpg) - 2) + ["failed_to_download", "failed_to_resize"]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"jpg": jpg, "caption": caption, "status": status}), tmp_path / "pq" / "00000.parquet")
    # Hugging Face style {"bytes": ...} image structs in a second file, plus a file that is not parquet at all.
    pq.write_table(pa.table({"image": [{"bytes": good["red"][0], "path": "x.png"}], "caption": ["hf style"]}),
                   tmp_path / "pq" / "00001.parquet")
    (tmp_path / "pq" / "00002.parquet").write_bytes(b"PAR1 broken")
    dc = _data_config(source="parquet", path=str(tmp_path / "pq"), data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["examples"] == 5
    assert result["skipped"] == {"truncated": 1, "unreadable": 1, "too_small": 1, "download_failed": 2,
                                 "corrupt_shard": 1}
    assert "hf style" in {c for _, c in _read(dc).values()}


def test_captions_that_are_not_text_or_not_utf8_are_counted(tmp_path):
    """A number where a caption should be is skipped (never crashes the build); bytes that are not UTF-8 are kept
    with replacement characters and counted."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    red = _good_images()["red"][0]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"jpg": [red, red], "caption": [7, 8]}), tmp_path / "pq" / "00000.parquet")
    pq.write_table(pa.table({"jpg": [red, red], "caption": [b"caf\xe9 rouge", "a red square"]}),
                   tmp_path / "pq" / "00001.parquet")
    dc = _data_config(source="parquet", path=str(tmp_path / "pq"), data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["examples"] == 2 and result["skipped"] == {"caption_not_text": 2}
    assert result["converted"]["caption_bad_encoding"] == 1
    captions = sorted(c for _, c in _read(dc).values())
    assert captions == ["a red square", "caf\ufffd rouge"]


@pytest.mark.parametrize("naming", ["index", "sha1"])
def test_cc_tsv_builder(tmp_path, naming):
    imgs = tmp_path / "images"
    imgs.mkdir()
    good = list(_good_images().values())
    lines = ["url\tcaption"]
    for i, (data, ext, caption) in enumerate(good):
        url = f"https://example.com/{i}.{ext}"
        lines.append(f"{url}\t{caption}" if i % 2 == 0 else f"{caption}\t{url}")  # CC12M and CC3M layouts
        stem = f"{i:06d}" if naming == "index" else hashlib.sha1(url.encode()).hexdigest()
        (imgs / f"{stem}.{ext}").write_bytes(data)
    lines.append("https://example.com/never.jpg\tnot downloaded")
    lines.append("no url on this line\tat all")
    url = "https://example.com/corrupt.jpg"
    lines.append(f"{url}\tcorrupt file")
    stem = f"{len(good) + 1:06d}" if naming == "index" else hashlib.sha1(url.encode()).hexdigest()
    (imgs / f"{stem}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "cc.tsv").write_text("\n".join(lines) + "\n")
    dc = _data_config(source="cc_tsv", path=str(tmp_path / "cc.tsv"), images_dir=str(imgs),
                      cc_image_naming=naming, data_dir=str(tmp_path / "tfds"))
    result = build.build_dataset(dc)
    assert result["examples"] == 4
    assert result["skipped"] == {"missing_image": 1, "bad_row": 1, "unreadable": 1}
    assert sorted(c for _, c in _read(dc).values()) == sorted(c for _, _, c in good)


def test_load_builder_errors_name_the_problem(tmp_path):
    dc = _data_config(source="folder", path=str(tmp_path), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="captioned_folder.*dalle data"):
        build.load_builder(dc)
    with pytest.raises(ValueError, match="no image files"):
        build.build_dataset(dc)


def test_dalle_data_cli(tmp_path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    _write_folder(src)
    cfg = tmp_path / "cfg.py"
    cfg.write_text("from ml_collections import ConfigDict\n"
                   "def get_config(arg=None):\n"
                   f"    return ConfigDict({{'data': {{'source': 'folder', 'image_size': {SIZE}}}}})\n")
    rc = build.main(["--config", str(cfg), f"--config.data.path={src}", f"--config.data.data_dir={tmp_path}/t",
                     "--config.data.validation_fraction=0.0"])
    out = capsys.readouterr()
    assert rc == 0
    printed = out.out[out.out.index("{\n"):]  # tfds prints its own lines before the summary
    assert json.loads(printed)["examples"] == 4
    assert "missing_caption: " + os.path.join("sub", "nocaption.png") in out.err


def test_build_needs_path(tmp_path):
    dc = _data_config(source="cc_tsv", path=str(tmp_path / "x.tsv"), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="images_dir"):
        build.build_dataset(dc)
    dc = _data_config(source="folder", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="needs data.path"):
        build.build_dataset(dc)
