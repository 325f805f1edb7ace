"""Source conversions on generated files: ReCap parquet, mix665k filter + OCR-VQA naming fix, the
LLaVA-Pretrain zip, and the KitErrors for broken archives, missing paths and a full disk."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from llava.cli import main
from llava.errors import KitError
from llava.manifest import require_manifest
from llava.prepare.archives import extract_zip
from llava.prepare.convert_mix665k import drop_by_image, resolve_source_image
from llava.prepare.convert_recap import read_recap_pool
from llava.prepare.sources import Columns
from llava.prepare.storage import require_free_space
from llava.prepare.subsets import draw_subset
from prepare_samples import PROMPT, image_bytes, recap_shard, record, write_image

# ---------------------------------------------------------------------------------------- ReCap


def _recap_source(root: Path) -> dict[str, bytes | None]:
    images = {f"{n:012d}": image_bytes("JPEG", (30 + n, 20), seed=n) for n in range(9)}
    images["000000000004"] = image_bytes("PNG", (24, 24), seed=4)  # a PNG row keeps its real extension
    captions = {sample_id: f"A detailed caption of image {sample_id}." for sample_id in images}
    rows = [(sample_id, data, captions[sample_id]) for sample_id, data in images.items()]
    recap_shard(root / "data/train-00000-of-00002.parquet", rows[:5])
    recap_shard(root / "data/train-00001-of-00002.parquet", rows[5:])
    return images


def test_recap_pool_applies_the_prompt_to_the_human_turn(tmp_path):
    _recap_source(tmp_path)
    shards = sorted((tmp_path / "data").glob("*.parquet"))

    pool = read_recap_pool(shards, Columns(), PROMPT)

    assert len(pool.records) == 9
    assert pool.rows[5] == (1, 0)
    first = pool.records[0]
    assert first["conversations"] == [
        {"from": "human", "value": "<image>\nPlease generate detailed descriptions of the given image."},
        {"from": "gpt", "value": "A detailed caption of image 000000000000."},
    ]
    assert "image" not in first  # assigned when the image is written


def test_recap_stage_writes_only_the_subset_images_byte_identical(tmp_path):
    images = _recap_source(tmp_path / "src")
    out = tmp_path / "stage1_5"

    code = main(["prepare", "data", "--stage", "1.5", "--source-dir", str(tmp_path / "src"), "--out", str(out),
                 "--size", "4", "--seed", "1", "--workers", "1"])

    assert code == 0
    data = json.loads((out / "data.json").read_text())
    assert [r["id"] for r in data] == draw_subset(list(images), 4, seed=1)
    written = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*") if p.is_file())
    assert written == sorted(r["image"] for r in data)
    for entry in data:
        assert (out / "images" / entry["image"]).read_bytes() == images[entry["id"]]
        assert entry["image"] == f"coco118k/{entry['id']}" + (".png" if entry["id"] == "000000000004" else ".jpg")
        assert entry["conversations"][0]["value"] == "<image>" + PROMPT
    body = require_manifest(out, "dataset")
    assert body["metrics"]["samples"] == 4 and body["metrics"]["quarantined"] == 0
    assert sorted(body["extra"]["source"]["files_sha256"]) == [
        "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]


def test_recap_with_a_wrong_column_name_says_which(tmp_path):
    _recap_source(tmp_path)
    shard = sorted((tmp_path / "data").glob("*.parquet"))[0]
    with pytest.raises(KitError, match="has no column\\(s\\) conversation .*fix `columns`"):
        read_recap_pool([shard], Columns(conversations="conversation"), PROMPT)


# ---------------------------------------------------------------------------------------- mix665k


def _ocr_source(root: Path) -> tuple[Path, Path]:
    """mix665k-like records: coco, gqa, text-only, and OCR-VQA covers with the known naming problems."""
    images = root / "roots"
    write_image(images / "coco/train2017/000000000001.jpg")
    write_image(images / "gqa/images/2354786.jpg", seed=2)
    write_image(images / "ocr_vqa/images/111.jpg", "GIF", seed=3)      # GIF bytes under .jpg
    write_image(images / "ocr_vqa/images/222.png", "PNG", seed=4)      # .jpg missing, .png beside it
    write_image(images / "ocr_vqa/images/333.jpg", seed=5)             # a correct one
    records = [
        record("000000000001", "coco/train2017/000000000001.jpg"),
        record("2354786", "gqa/images/2354786.jpg"),
        record("111", "ocr_vqa/images/111.jpg"),
        record("222", "ocr_vqa/images/222.jpg"),
        record("333", "ocr_vqa/images/333.jpg"),
        record("sharegpt_1", None, "Write a haiku.", "Leaves fall."),
    ]
    (root / "src").mkdir(parents=True)
    (root / "src/llava_v1_5_mix665k.json").write_text(json.dumps(records))
    return root / "src", images


def test_ocr_vqa_filter_is_on_by_default_and_text_only_records_stay(tmp_path):
    source, roots = _ocr_source(tmp_path)
    out = tmp_path / "stage2"

    assert main(["prepare", "data", "--stage", "2", "--source-dir", str(source), "--out", str(out),
                 "--image-root", f"coco={roots / 'coco'}", "--image-root", f"gqa={roots / 'gqa'}",
                 "--size", "0", "--workers", "1"]) == 0

    assert [r["id"] for r in json.loads((out / "data.json").read_text())] == ["000000000001", "2354786", "sharegpt_1"]
    assert not (out / "subset_index.json").exists()  # --size 0: the whole filtered pool
    body = require_manifest(out, "dataset")
    assert body["extra"]["pool"]["dropped"] == {"ocr_vqa": 3}
    assert body["metrics"]["text_samples"] == 1
    assert (out / "images/gqa/images/2354786.jpg").stat().st_ino == (roots / "gqa/images/2354786.jpg").stat().st_ino


def test_keep_ocr_vqa_stages_gif_and_png_under_their_real_names(tmp_path):
    source, roots = _ocr_source(tmp_path)
    out = tmp_path / "stage2"

    assert main(["prepare", "data", "--stage", "2", "--source-dir", str(source), "--out", str(out),
                 "--image-root", str(roots), "--keep-ocr-vqa", "--size", "0", "--link", "copy", "--workers", "1"]) == 0

    data = {r["id"]: r.get("image") for r in json.loads((out / "data.json").read_text())}
    assert data["111"] == "ocr_vqa/images/111.gif"
    assert data["222"] == "ocr_vqa/images/222.png"
    assert data["333"] == "ocr_vqa/images/333.jpg"
    assert (out / "images/ocr_vqa/images/111.gif").read_bytes() == (roots / "ocr_vqa/images/111.jpg").read_bytes()
    fixes = [json.loads(line) for line in (out / "image_fixes.jsonl").read_text().splitlines()]
    assert fixes == [
        {"id": "111", "image": "ocr_vqa/images/111.jpg", "staged_as": "ocr_vqa/images/111.gif", "reason": "gif named .jpg"},
        {"id": "222", "image": "ocr_vqa/images/222.jpg", "staged_as": "ocr_vqa/images/222.png", "reason": ".jpg missing, found .png"},
    ]
    body = require_manifest(out, "dataset")
    assert body["metrics"]["quarantined"] == 0 and body["metrics"]["samples"] == 6
    assert body["extra"]["pool"]["filters"] == {"drop_image_containing": []}
    assert body["extra"]["image_fixes"] == 2 and "image_fixes.jsonl" in body["files"]


def test_missing_image_root_without_an_archive_is_named_before_anything_is_staged(tmp_path, capsys):
    import yaml

    from llava.prepare.sources import DEFAULT_SOURCES

    source, roots = _ocr_source(tmp_path)
    table = yaml.safe_load(DEFAULT_SOURCES.read_text())
    del table["stages"]["2"]["image_archives"]["gqa"]  # a source the table has no download for
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(table))

    code = main(["prepare", "data", "--stage", "2", "--source-dir", str(source), "--out", str(tmp_path / "o"),
                 "--sources", str(tmp_path / "sources.yaml"),
                 "--image-root", f"coco={roots / 'coco'}", "--size", "0", "--workers", "1"])

    assert code == 2
    assert "image source 'gqa' has no published archive in the sources file: pass --image-root gqa=PATH" \
        in capsys.readouterr().err
    assert not (tmp_path / "o/images/coco").exists()


def test_filter_and_resolver_units(tmp_path):
    kept, dropped = drop_by_image([record("a", "ocr_vqa/x.jpg"), record("b", "coco/y.jpg"), record("c")], ["ocr_vqa"])
    assert [r["id"] for r in kept] == ["b", "c"] and dropped == {"ocr_vqa": 1}
    assert resolve_source_image(tmp_path, "nothing.jpg") == (None, "nothing.jpg", None)


# ---------------------------------------------------------------------------------------- stage 1 zip


def _pretrain_source(root: Path, members: dict[str, bytes]) -> Path:
    root.mkdir(parents=True)
    records = [record(Path(name).stem, name, "Describe briefly.", f"caption {n}")
               for n, name in enumerate(sorted(members))]
    for entry in records:  # LLaVA-Pretrain puts the tag after the instruction
        entry["conversations"][0]["value"] = "Describe briefly.\n<image>"
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    with zipfile.ZipFile(root / "images.zip", "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return root


def test_pretrain_zip_is_extracted_and_verified_with_729_tokens_per_image(tmp_path):
    members = {f"0000{n}/00000{n}{k}.jpg": image_bytes(seed=n * 10 + k) for n in range(2) for k in range(3)}
    source = _pretrain_source(tmp_path / "src", members)
    out = tmp_path / "stage1"

    assert main(["prepare", "data", "--stage", "1", "--source-dir", str(source), "--out", str(out), "--workers", "1"]) == 0

    for name, data in members.items():
        assert (out / "images" / name).read_bytes() == data
    stats = json.loads((out / "stats.json").read_text())
    assert stats["image_tokens"]["min"] == stats["image_tokens"]["max"] == 729
    assert stats["image_tokens"]["n"] == 6
    assert require_manifest(out, "dataset")["metrics"]["samples"] == 6
    # a rerun resumes: nothing is extracted twice
    assert extract_zip(source / "images.zip", out / "images") == 0


def test_a_broken_or_hostile_archive_is_a_kit_error(tmp_path):
    source = _pretrain_source(tmp_path / "src", {"a/1.jpg": image_bytes(), "a/2.jpg": image_bytes(seed=2)})
    archive = source / "images.zip"
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-60])  # lost the central directory
    with pytest.raises(KitError, match="archive .*cut.zip is broken .*delete it and run the command again"):
        extract_zip(cut, tmp_path / "x")

    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(corrupt, "w") as bundle:
        bundle.writestr("a.bin", b"A" * 5000)
    raw = bytearray(corrupt.read_bytes())
    raw[40:60] = b"B" * 20  # flip stored bytes: the CRC check fails on read
    corrupt.write_bytes(bytes(raw))
    with pytest.raises(KitError, match="member a.bin"):
        extract_zip(corrupt, tmp_path / "y")
    assert not list((tmp_path / "y").rglob("*.bin"))

    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(hostile, "w") as bundle:
        bundle.writestr("../escape.jpg", b"x")
    with pytest.raises(KitError, match="outside"):
        extract_zip(hostile, tmp_path / "z")
    assert not (tmp_path / "escape.jpg").exists()


def test_missing_paths_and_a_full_disk_are_kit_errors(tmp_path, capsys):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(KitError, match="not enough disk space for extracting x in .*needs"):
        require_free_space(tmp_path / "not/yet/made", free + (1 << 30), "extracting x")
    require_free_space(tmp_path, 1024, "a small file")  # fits: no error

    with pytest.raises(KitError, match="does not exist"):
        extract_zip(tmp_path / "absent.zip", tmp_path / "out")
    code = main(["prepare", "data", "--stage", "1", "--source-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert code == 2 and "--source-dir" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = main(["prepare", "data", "--stage", "1", "--source-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert code == 2 and "has no file blip_laion_cc_sbu_558k.json" in capsys.readouterr().err
    code = main(["prepare", "verify", str(tmp_path / "no-such-dataset")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
