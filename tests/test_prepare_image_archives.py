"""`prepare data --stage 2` fetching the image sources from their archives over loopback HTTP
(tests/archive_server.py stands in for images.cocodataset.org and the others): plan and sizes first,
only referenced members extracted, resume after a cut connection, checksum and missing-member errors,
and no archive traffic at all when the user gives every root."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from archive_server import ArchiveServer
from llava.cli import main
from llava.manifest import require_manifest
from llava.prepare.sources import DEFAULT_SOURCES
from prepare_samples import image_bytes, record, zip_bytes

# source -> {archive file: [members]}; the mix665k paths are <source>/<member>
ARCHIVES = {
    "coco": {"train2017.zip": ["train2017/000000000009.jpg", "train2017/000000000025.jpg", "train2017/unused.jpg"]},
    "gqa": {"images.zip": ["images/2354786.jpg", "images/unused.jpg"]},
    "textvqa": {"train_val_images.zip": ["train_images/0054c91397f2fe05.jpg"]},
    "vg": {"images.zip": ["VG_100K/10.jpg"], "images2.zip": ["VG_100K_2/1.jpg"]},
}


def _zip(members: list[str]) -> bytes:
    # noisy 320x320 JPEGs: big enough that a cut connection leaves whole 64 KiB chunks on disk
    return zip_bytes({name: image_bytes(size=(320, 320), seed=number + len(name))
                      for number, name in enumerate(members)})


def _records(extra: list[dict] | None = None) -> list[dict]:
    used = [f"{source}/{member}" for source, files in ARCHIVES.items() for members in files.values()
            for member in members if "unused" not in member]
    rows = [record(f"r{n}", path) for n, path in enumerate(used)]
    return rows + [record("ocr-0", "ocr_vqa/images/1.jpg"), record("text-0", None, "Hi?", "Hello.")] + (extra or [])


@pytest.fixture()
def world(tmp_path):
    """A loopback archive site, a source dir with mix665k, and a sources file pointing at the site."""
    blobs = {f"/{source}/{name}": _zip(members) for source, files in ARCHIVES.items() for name, members in files.items()}
    with ArchiveServer(blobs) as server:
        source_dir = tmp_path / "source"
        source_dir.mkdir()
        (source_dir / "llava_v1_5_mix665k.json").write_text(json.dumps(_records()))
        table = yaml.safe_load(DEFAULT_SOURCES.read_text())
        table["stages"]["2"]["image_archives"] = {
            source: [{"url": f"{server.url}/{source}/{name}"} for name in files] for source, files in ARCHIVES.items()}
        sources = tmp_path / "sources.yaml"
        sources.write_text(yaml.safe_dump(table))
        yield server, source_dir, sources, tmp_path


def _run(world, *extra: str) -> int:
    server, source_dir, sources, tmp = world
    return main(["prepare", "data", "--stage", "2", "--source-dir", str(source_dir), "--sources", str(sources),
                 "--out", str(tmp / "out"), "--downloads", str(tmp / "dl"), "--size", "0", "--workers", "1", *extra])


def _pin(world, source: str, name: str, sha256: str | None = None, size: int | None = None) -> None:
    sources = world[2]
    table = yaml.safe_load(sources.read_text())
    for entry in table["stages"]["2"]["image_archives"][source]:
        if entry["url"].endswith(f"/{source}/{name}"):
            entry.update({"sha256": sha256, "size": size})
    sources.write_text(yaml.safe_dump(table))


def test_every_source_is_downloaded_once_and_only_referenced_images_are_extracted(world, capsys):
    server, _, _, tmp = world
    _pin(world, "coco", "train2017.zip", hashlib.sha256(server.files["/coco/train2017.zip"]).hexdigest(),
         len(server.files["/coco/train2017.zip"]))

    assert _run(world) == 0

    out = capsys.readouterr().out
    assert out.index("stage-2 image archives") < out.index("samples kept")  # the plan comes first
    for source, files in ARCHIVES.items():
        for name in files:
            assert f"{source:8} {name}" in out
            assert server.gets(f"/{source}/{name}") == [None]
    assert "total to download: " in out
    body = require_manifest(tmp / "out", "dataset")
    assert body["metrics"]["samples"] == 7 and body["metrics"]["quarantined"] == 0
    assert {row["file"] for row in body["extra"]["image_archives"]} == {
        "train2017.zip", "images.zip", "train_val_images.zip", "images2.zip"}
    roots = tmp / "dl/images/roots"
    assert (roots / "vg/VG_100K_2/1.jpg").is_file() and (tmp / "out/images/vg/VG_100K_2/1.jpg").is_file()
    assert not (roots / "coco/train2017/unused.jpg").exists() and not (roots / "gqa/images/unused.jpg").exists()

    server.requests.clear()
    assert _run(world) == 0  # a rerun finds every archive complete and downloads nothing
    assert not [r for r in server.requests if r[0] == "GET"]
    assert "already downloaded" in capsys.readouterr().out


def test_user_roots_mean_no_archive_traffic(world, tmp_path):
    server, _, _, _ = world
    roots = tmp_path / "mine"
    for source, files in ARCHIVES.items():
        for members in files.values():
            for member in members:
                target = roots / source / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(image_bytes(seed=3))

    assert _run(world, "--image-root", str(roots)) == 0

    assert server.requests == []
    assert require_manifest(tmp_path / "out", "dataset")["extra"]["image_archives"] == []


def test_a_cut_connection_resumes_within_the_run_and_across_runs(world, capsys):
    server, _, _, tmp = world
    size = len(server.files["/coco/train2017.zip"])
    assert size > 150_000
    server.cuts["/coco/train2017.zip"] = [150_000]  # one drop: the next attempt continues with a Range GET
    assert _run(world) == 0
    first, second = server.gets("/coco/train2017.zip")
    assert first is None and second in ("bytes=65536-", "bytes=131072-")  # whole chunks survive the cut

    (tmp / "dl/images/archives/gqa/images.zip").unlink()
    server.cuts["/gqa/images.zip"] = [70_000, 1000, 1000]  # every attempt of this run drops
    assert _run(world) == 2
    err = capsys.readouterr().err
    part = tmp / "dl/images/archives/gqa/images.zip.part"
    have = part.stat().st_size
    assert have >= 65536 and f"download of {server.url}/gqa/images.zip into {part} stopped at {have} of" in err
    assert "run the same command again to resume" in err
    assert (tmp / "dl/images/archives/coco/train2017.zip").stat().st_size == size  # finished archives stay

    server.requests.clear()
    assert _run(world) == 0
    assert server.gets("/gqa/images.zip") == [f"bytes={have}-"] and server.gets("/coco/train2017.zip") == []
    assert (tmp / "dl/images/archives/gqa/images.zip").read_bytes() == server.files["/gqa/images.zip"]


def test_a_wrong_checksum_sets_the_file_aside_and_keeps_the_others(world, capsys):
    server, _, _, tmp = world
    _pin(world, "vg", "images2.zip", sha256="0" * 64)

    assert _run(world) == 2

    err = capsys.readouterr().err
    bad = tmp / "dl/images/archives/vg/images2.zip.bad-checksum"
    assert f"image archive {server.url}/vg/images2.zip: sha256" in err and str(bad) in err
    assert bad.stat().st_size == len(server.files["/vg/images2.zip"])
    kept = tmp / "dl/images/archives/vg/images.zip"
    assert kept.is_file()  # archives checked before the bad one stay

    _pin(world, "vg", "images2.zip", sha256=hashlib.sha256(server.files["/vg/images2.zip"]).hexdigest())
    server.requests.clear()
    assert _run(world) == 0
    assert server.gets("/vg/images2.zip") == [None] and server.gets("/vg/images.zip") == []


def test_a_size_that_differs_from_the_sources_file_is_named(world, capsys):
    server, _, _, tmp = world
    _pin(world, "textvqa", "train_val_images.zip", size=len(server.files["/textvqa/train_val_images.zip"]) + 10)

    assert _run(world) == 2
    err = capsys.readouterr().err
    assert f"image archive {server.url}/textvqa/train_val_images.zip has no bytes past" in err
    assert "the file changed or its recorded size is wrong" in err


def test_an_image_missing_from_the_archives_is_named(world, capsys):
    _, source_dir, _, tmp = world
    (source_dir / "llava_v1_5_mix665k.json").write_text(json.dumps(_records([record("gone", "coco/train2017/404.jpg")])))

    assert _run(world) == 2

    err = capsys.readouterr().err
    assert "1 images the subset references are in none of coco's archives" in err
    assert str(tmp / "dl/images/archives/coco/train2017.zip") in err and "coco/train2017/404.jpg" in err
    assert (tmp / "dl/images/roots/coco/train2017/000000000009.jpg").is_file()  # extracted ones are kept


def test_unknown_root_name_and_a_source_without_archive(world, tmp_path, capsys):
    assert _run(world, "--image-root", f"cocoo={tmp_path}") == 2
    err = capsys.readouterr().err
    assert f"--image-root cocoo={tmp_path}: unknown source 'cocoo'; known sources: coco, gqa" in err

    assert _run(world, "--keep-ocr-vqa") == 2
    err = capsys.readouterr().err
    assert "image source 'ocr_vqa' has no published archive" in err and "--image-root ocr_vqa=PATH" in err
