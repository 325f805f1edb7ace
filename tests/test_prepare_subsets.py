"""Seeded subsets: byte-identical across runs and processes, rebuilt exactly from a published index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.cli import main
from llava.errors import KitError
from llava.prepare.subsets import assign_unique_ids, draw_subset, ids_sha256, make_index
from prepare_samples import record, write_image

POOL = [f"sample-{n:04d}" for n in range(500)]


def test_draw_is_a_function_of_seed_and_ids_only():
    first = draw_subset(POOL, 50, seed=7)
    assert first == draw_subset(list(reversed(POOL)), 50, seed=7)  # pool order does not matter
    assert len(set(first)) == 50 and set(first) <= set(POOL)
    assert draw_subset(POOL, 80, seed=7)[:50] == first  # a larger subset extends a smaller one
    assert draw_subset(POOL, 50, seed=8) != first
    assert len(set(draw_subset(POOL, 50, seed=8)) & set(first)) < 25  # not a shifted copy


def test_pinned_draw_never_changes():
    """A published subset must survive library upgrades: pin a tiny draw by value.

    Expected values from coreutils: `printf '0:d' | sha256sum` (7d98...) is the smallest of a..e, then
    '0:a' (9df3...); `printf '["d","a"]' | sha256sum` gives the ids hash."""
    assert draw_subset(["a", "b", "c", "d", "e"], 2, seed=0) == ["d", "a"]
    assert ids_sha256(["d", "a"]) == "8d31ea3593a26a92ef60a1e0fa6ad5439584f08529906cfe04ca59befa1989a9"


def test_subset_errors():
    with pytest.raises(KitError, match="larger than the pool"):
        draw_subset(POOL, 501, seed=0)
    with pytest.raises(KitError, match="not unique"):
        draw_subset(["a", "a"], 1, seed=0)


def test_duplicate_and_missing_ids_become_unique_in_source_order():
    records = [{"id": "x"}, {"id": "x"}, {"id": 5}, {}, {"id": "x#2"}, {"id": "x"}]
    assert assign_unique_ids(records) == 4
    assert [r["id"] for r in records] == ["x", "x#2", "5", "row3", "x#2#2", "x#3"]


def _mix_source(root: Path) -> tuple[Path, Path]:
    """A stage-2 source (llava_v1_5_mix665k.json) with coco/ocr_vqa images and text-only records."""
    source, images = root / "source", root / "images"
    records = []
    for n in range(40):
        if n % 5 == 4:
            records.append(record(f"text-{n}", None, f"question {n}", f"answer {n}"))
        elif n % 5 == 3:
            write_image(images / f"ocr_vqa/images/{n}.jpg", seed=n)
            records.append(record(f"ocr-{n}", f"ocr_vqa/images/{n}.jpg"))
        else:
            write_image(images / f"coco/train2017/{n:012d}.jpg", seed=n)
            records.append(record(f"{n:012d}", f"coco/train2017/{n:012d}.jpg"))
    source.mkdir(parents=True)
    (source / "llava_v1_5_mix665k.json").write_text(json.dumps(records))
    return source, images


def _prepare_args(source: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "data", "--stage", "2", "--source-dir", str(source), "--out", str(out),
            "--image-root", str(images), "--workers", "1", *extra]


def test_same_seed_is_byte_identical_across_processes_and_from_index_rebuilds_it(tmp_path):
    source, images = _mix_source(tmp_path)
    args_a = _prepare_args(source, images, tmp_path / "a", "--size", "12", "--seed", "3")
    args_b = _prepare_args(source, images, tmp_path / "b", "--size", "12", "--seed", "3")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    child = subprocess.run([sys.executable, "-m", "llava.cli", *args_b], env=env, capture_output=True, text=True)
    assert child.returncode == 0, child.stderr

    assert main(args_a) == 0
    assert main(_prepare_args(source, images, tmp_path / "c", "--from-index", str(tmp_path / "a/subset_index.json"))) == 0
    assert main(_prepare_args(source, images, tmp_path / "d", "--size", "12", "--seed", "4")) == 0

    for name in ("subset_index.json", "data.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
    index = json.loads((tmp_path / "a/subset_index.json").read_text())
    assert index["seed"] == 3 and index["size"] == 12 and index["pool_size"] == 32  # 8 ocr_vqa dropped
    assert index["ids_sha256"] == ids_sha256(index["ids"])
    assert not any(sample_id.startswith("ocr-") for sample_id in index["ids"])
    other = json.loads((tmp_path / "d/subset_index.json").read_text())
    assert other["ids"] != index["ids"]
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert manifest["extra"]["subset"]["ids_sha256"] == index["ids_sha256"]
    assert manifest["extra"]["pool"]["dropped"] == {"ocr_vqa": 8}


def _published(tmp_path: Path, source: Path, images: Path) -> dict:
    assert main(_prepare_args(source, images, tmp_path / "pub", "--size", "5")) == 0
    return json.loads((tmp_path / "pub/subset_index.json").read_text())


def test_from_index_refuses_an_edited_index_another_source_or_other_filters(tmp_path, capsys):
    source, images = _mix_source(tmp_path)
    index = _published(tmp_path, source, images)

    edited = dict(index, ids=index["ids"][:-1] + ["text-4"])
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert main(_prepare_args(source, images, tmp_path / "x", "--from-index", str(tmp_path / "edited.json"))) == 2
    assert "the ids do not match ids_sha256" in capsys.readouterr().err

    moved = make_index([r for r in index["ids"]], size=5, seed=0, source_sha256="0" * 64,
                       stage="2", source="liuhaotian/LLaVA-Instruct-150K", filters=index["filters"])
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    assert main(_prepare_args(source, images, tmp_path / "y", "--from-index", str(tmp_path / "moved.json"))) == 2
    assert "was drawn from a source with sha256 000000000000" in capsys.readouterr().err

    assert main(_prepare_args(source, images, tmp_path / "z", "--keep-ocr-vqa",
                              "--from-index", str(tmp_path / "pub/subset_index.json"))) == 2
    assert "was drawn with filters" in capsys.readouterr().err


def test_repeated_ids_do_not_depend_on_the_source_order():
    """Two machines reading the same rows in another order give each record the same id."""
    import random

    records = [{"id": "7", "task": task, "n": n} for task in ("vqa", "caption", "ref") for n in range(3)]
    records += [{"id": "7#2", "task": "own"}, {"id": "8", "task": "x"}]
    shuffled = [dict(r) for r in records]
    random.Random(3).shuffle(shuffled)
    assign_unique_ids(records)
    assign_unique_ids(shuffled)
    key = lambda r: (r["task"], r.get("n"))  # noqa: E731
    assert {key(r): r["id"] for r in records} == {key(r): r["id"] for r in shuffled}
    assert len({r["id"] for r in records}) == len(records)
