"""Loss curves for the reports: per stage from the checkpoints' manifests, the seed's loss only on the seed's recipe."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from llava.evaluate.loss_curves import lineage_curves, seed_loss, write_lineage_chart
from llava.manifest import write_manifest
from llava.recipe import STAGES_DIR, load_recipe


def test_seed_loss_is_marked_only_for_the_seed_recipe():
    assert seed_loss("stage1", load_recipe("stage1").content_hash()) == pytest.approx(2.9441, abs=1e-4)
    assert seed_loss("stage2", load_recipe("stage2").content_hash()) == pytest.approx(0.7041, abs=1e-4)
    assert seed_loss("stage2", load_recipe("stage2", ["training.learning_rate=2e-5"]).content_hash()) is None
    assert seed_loss("stage1", load_recipe(STAGES_DIR / "smoke" / "stage1.yaml").content_hash()) is None
    assert seed_loss("mine", "0" * 64) is None


def test_lineage_curves_read_each_stage_and_draw_one_panel_each(tmp_path):
    hashes = {"stage1": load_recipe("stage1").content_hash(),
              "stage1_5": load_recipe(STAGES_DIR / "smoke" / "stage1_5.yaml").content_hash(),
              "stage2": load_recipe("stage2").content_hash()}
    for k, (name, digest) in enumerate(hashes.items()):
        folder = tmp_path / "checkpoints" / name
        folder.mkdir(parents=True)
        write_manifest(folder, "checkpoint", recipe_hash=digest,
                       extra={"stage": name, "loss_history": [[10, 3.0 - k], [20, 2.5 - k], [30, 2.2 - k]]})
    curves = lineage_curves(tmp_path / "checkpoints" / "stage2")
    assert [c["stage"] for c in curves] == ["stage1", "stage1_5", "stage2"]
    assert curves[1]["losses"] == pytest.approx([2.0, 1.5, 1.2]) and curves[1]["steps"] == [10, 20, 30]
    assert [c["seed_loss"] is not None for c in curves] == [True, False, True]
    png = write_lineage_chart(tmp_path / "checkpoints" / "stage2", tmp_path / "loss.png", "test")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 3 * image.height  # three panels side by side
    assert lineage_curves(tmp_path / "checkpoints" / "stage1")[0]["stage"] == "stage1"
    assert write_lineage_chart(tmp_path / "nothing-here", tmp_path / "none.png", "none") is None


def test_chance_level_of_a_circular_tsv(tmp_path):
    from llava.evaluate.circular import chance_level
    from llava.evaluate.mmbench_tsv import read_mmbench_tsv
    from llava.synthetic.world import write_test_set

    rows = read_mmbench_tsv(write_test_set(tmp_path / "t.tsv", random.Random(3), 5, blank=False, shuffled=True)).rows
    assert len(rows) == 20  # 5 questions x 4 rotations
    assert len({tuple(r.options.values()) for r in rows if r.index < 5}) > 1  # options shuffled per question
    assert chance_level(rows, circular=True) == pytest.approx(0.25 ** 4)
    assert chance_level(rows, circular=False) == pytest.approx(0.25)
