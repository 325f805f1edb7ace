"""Images that break or change after `prepare verify` are skipped by training, counted and named, never a crash.

A decompression bomb swapped in after verify, and a valid picture that is not the one verified, on the
default recipe (manifest required): both samples land in skips.jsonl with their reason, the run finishes,
no user file changes. With `data.require_manifest=false` a bomb is skipped the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from conftest import smoke_recipe
from image_files_samples import bomb_png, grey16_png
from train_cli import data_overrides, limit_for, new_dataset, run_train

QUICK = ["training.max_steps=2", "training.per_device_batch=24", "training.save_strategy=no",
         "checkpointing.resume_every_steps=0", "data.max_skip_fraction=0.1"]


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def skip_reasons(run_dir: Path) -> dict[str, str]:
    lines = (run_dir / "skips.jsonl").read_text().splitlines()
    return {row["id"]: row["reason"] for row in map(json.loads, lines)}


@limit_for(300)
def test_a_bomb_and_a_changed_image_swapped_in_after_verify_are_skipped_and_named(tiny_world, tmp_path):
    from llava.cli import main

    data = tmp_path / "data"
    records, images = new_dataset(tiny_world / "datasets" / "stage1", data)
    (data / "data.json").write_text(json.dumps(records))
    assert main(["prepare", "verify", str(data), "--workers", "1"]) == 0
    bomb, changed = records[3], records[7]
    assert sum(r["image"] in (bomb["image"], changed["image"]) for r in records) == 2  # not shared
    bomb_png(images / bomb["image"])
    grey16_png(images / changed["image"])
    before = file_hashes(data)

    done = run_train(tiny_world, "stage1", "swapped", [*data_overrides(data), *QUICK])

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "(2 samples skipped)" in done.stdout, done.stdout
    reasons = skip_reasons(tiny_world / "runs" / "swapped")
    assert set(reasons) == {bomb["id"], changed["id"]}
    for record in (bomb, changed):
        assert f"image {images / record['image']} changed since `prepare verify`" in reasons[record["id"]]
        assert f"skipped sample {record['id']}" in (tiny_world / "runs" / "swapped" / "train.log").read_text()
    assert file_hashes(data) == before  # the user's data and images untouched


def test_a_bomb_without_a_manifest_is_skipped_with_its_reason(tiny_world, tmp_path):
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage

    data = tmp_path / "data"
    records, images = new_dataset(tiny_world / "datasets" / "stage1", data)
    bomb_png(images / "bomb.png")
    records[5] = dict(records[5], image="bomb.png")
    (data / "data.json").write_text(json.dumps(records))
    before = file_hashes(data)
    torch.set_num_threads(1)
    recipe = smoke_recipe("stage1", *data_overrides(data), *QUICK, "data.require_manifest=false",
                          f"output={tmp_path}/out")
    result = train_stage(recipe, smoke_layout(tiny_world), run_dir=tmp_path / "run")

    assert result.skipped == 1
    reason = skip_reasons(tmp_path / "run")[records[5]["id"]]
    assert reason.startswith("decompression bomb: Image size (400000000 pixels) exceeds limit"), reason
    assert file_hashes(data) == before
