"""The per-sample checks shared by verification and training (llava.data.record_checks)."""

from __future__ import annotations

import pytest
from PIL import ImageFile

from llava.data.record_checks import conversation_fault, image_fault, inspect_image
from prepare_samples import record, write_image, write_truncated_jpeg


def test_good_image_and_text_records_pass():
    assert conversation_fault(record("a", "x.jpg")) is None
    assert conversation_fault(record("b")) is None
    assert conversation_fault(record("b"), expects_image=False) is None
    assert conversation_fault(record("a", "x.jpg"), expects_image=True) is None


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: r["conversations"].reverse(), "roles do not alternate human/gpt"),
    (lambda r: r["conversations"].append({"from": "gpt", "value": "again"}), "roles do not alternate human/gpt"),
    (lambda r: r.update(conversations=[]), "empty conversation"),
    (lambda r: r.pop("conversations"), "empty conversation"),
    (lambda r: r["conversations"][0].update(value="<image> and <image>"), "2 <image> tags, expected 1"),
    (lambda r: r["conversations"][0].update(value="no tag here"), "0 <image> tags, expected 1"),
    (lambda r: r["conversations"][1].update(value="   "), "turn 2 has an empty value"),
    (lambda r: r["conversations"][0].update({"from": "system"}), "turn 1 has role 'system', expected 'human' or 'gpt'"),
    (lambda r: r.update(image="../outside.jpg"), "image path '../outside.jpg' leaves the image folder"),
    (lambda r: r.update(image=""), "image must be a non-empty relative path or a list of them"),
])
def test_conversation_faults_name_the_problem(mutate, reason):
    bad = record("a", "x.jpg")
    mutate(bad)
    assert conversation_fault(bad) == reason


def test_image_expectations_per_stage():
    assert conversation_fault(record("t"), expects_image=True) == "no image, expected an image sample"
    assert conversation_fault(record("i", "x.jpg"), expects_image=False) == "has an image, expected a text-only sample"
    text_with_tag = record("t", None, question="<image> hi")
    assert conversation_fault(text_with_tag) == "1 <image> tags, expected 0"
    two_images = record("m", "a.jpg", question="<image> and")
    two_images["image"] = ["a.jpg", "b.jpg"]
    assert conversation_fault(two_images) is None  # one tag per image
    assert conversation_fault("not a dict") == "record is not a JSON object"


def test_image_faults(tmp_path):
    assert image_fault(write_image(tmp_path / "ok.jpg")) is None
    assert image_fault(write_image(tmp_path / "ok.png", "PNG")) is None
    assert image_fault(tmp_path / "absent.jpg") == "missing image"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_fault(tmp_path / "empty.jpg") == "zero-byte file"
    assert image_fault(write_truncated_jpeg(tmp_path / "cut.jpg")) == "truncated image"
    assert image_fault(write_image(tmp_path / "cover.jpg", "GIF")) == "gif named .jpg"
    assert image_fault(write_image(tmp_path / "cover2.jpg", "PNG")) == "png named .jpg"
    (tmp_path / "junk.jpg").write_bytes(b"this is text, not a picture")
    assert image_fault(tmp_path / "junk.jpg") == "undecodable image: not a format PIL can read"
    (tmp_path / "folder.jpg").mkdir()
    assert image_fault(tmp_path / "folder.jpg") == "not a regular file"


def test_image_size_and_format_are_reported(tmp_path):
    info = inspect_image(write_image(tmp_path / "a.jpg", size=(123, 45)))
    assert (info.fault, info.width, info.height, info.format) == (None, 123, 45, "JPEG")


def test_truncation_follows_pil_setting_used_by_training(tmp_path):
    """Training loads with LOAD_TRUNCATED_IMAGES=True (as the original): the image then decodes."""
    cut = write_truncated_jpeg(tmp_path / "cut.jpg")
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert image_fault(cut) is None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert image_fault(cut) == "truncated image"
