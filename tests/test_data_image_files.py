"""The one image loader: 16-bit grey scaled (not clipped to white), float refused, a decompression bomb an
unusable image with its reason, a changed file noticed; verify reports every lossy RGB conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from image_files_samples import bomb_png, grey16_png, lossy_images
from llava.cli import main
from llava.data.image_files import ImageStamp, UnusableImage, load_rgb, stamp_of


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    rgb = np.asarray(load_rgb(grey16_png(tmp_path / "scan.png", value=40000)))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [156, 156, 156]  # round(40000 / 257); convert("RGB") gives 255
    assert rgb[0, 0].tolist() == [0, 0, 0]
    assert np.asarray(load_rgb(grey16_png(tmp_path / "white.png", value=65535)))[1, 1].tolist() == [255] * 3


def test_float_and_wide_integer_pixels_are_refused_with_the_reason(tmp_path):
    from PIL import Image

    Image.new("F", (4, 4), 0.5).save(tmp_path / "depth.tif")
    with pytest.raises(UnusableImage, match="32-bit float pixels have no defined range"):
        load_rgb(tmp_path / "depth.tif")
    Image.new("I", (4, 4), 70000).save(tmp_path / "counts.tif")
    with pytest.raises(UnusableImage, match=r"32-bit integer pixels \(70000..70000\)"):
        load_rgb(tmp_path / "counts.tif")


def test_a_bomb_is_an_unusable_image_not_a_crash(tmp_path):
    with pytest.raises(UnusableImage, match="decompression bomb: Image size \\(400000000 pixels\\)"):
        load_rgb(bomb_png(tmp_path / "bomb.png"))


def test_a_changed_file_is_named_with_what_changed(tmp_path):
    path = grey16_png(tmp_path / "a.png")
    stamp = stamp_of(path.read_bytes())
    assert load_rgb(path, stamp).size == (32, 32)
    grey16_png(path, value=1000)  # same size in bytes is not guaranteed: compare both ways
    changed = stamp_of(path.read_bytes())
    assert changed != stamp
    with pytest.raises(UnusableImage, match=f"image {path} changed since `prepare verify`"):
        load_rgb(path, stamp)
    with pytest.raises(UnusableImage, match="same size, different sha256"):
        load_rgb(path, ImageStamp(changed.size, stamp.sha256))


def test_verify_reports_lossy_conversions_and_records_digests(tmp_path, capsys):
    expected = lossy_images(tmp_path / "images")
    names = [*expected, "opaque.png"]
    records = [{"id": f"s{i}", "image": name, "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A picture."}]}
        for i, name in enumerate(names)]
    (tmp_path / "data.json").write_text(json.dumps(records))
    before = {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()}

    assert main(["prepare", "verify", str(tmp_path), "--workers", "1"]) == 0

    out = capsys.readouterr().out
    assert f"{len(names)} of {len(names)} samples kept" in out  # reported, not quarantined
    assert f"{len(expected)} kept images lose information when converted to RGB" in out
    assert f"size and sha256 of {len(names)} images -> {tmp_path / 'image_digests.tsv'}: training skips" in out
    for name, reason in expected.items():
        assert f"      1  {reason}: {name}" in out, out
    assert "opaque.png" not in out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["extra"]["image_conversions"] == {reason: 1 for reason in expected.values()}
    digests = (tmp_path / "image_digests.tsv").read_text().splitlines()
    assert digests[0] == "sha256\tbytes\tpath" and len(digests) == 1 + len(names)
    assert {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()} == before
