"""Bad samples at train time are skipped visibly, never swapped for another sample, within a budget.

The tiny stage-1 set is replicated to 600 samples so that 1% is six samples: one of each fault
(missing, corrupt and truncated image, roles that do not alternate, an extra <image> tag, a sample
longer than model_max_length). Two dataloader workers record them, as on a GPU box.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import smoke_recipe
from train_cli import REASON_WORDS, data_overrides, new_dataset, plant_faults, write_dataset

SAMPLES = 600
BATCH = 24


@pytest.fixture(autouse=True)
def one_thread():
    """In-process training on one intra-op thread: two threads spin-wait badly on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def planted_dataset(world, target, bad: int) -> dict[str, str]:
    base, images = new_dataset(world / "datasets" / "stage1", target)
    records = [dict(r, id=f"{r['id']}-copy{k}") for k in range(SAMPLES // len(base) + 1) for r in base][:SAMPLES]
    planted = plant_faults(records, [round(i * SAMPLES / bad) + 3 for i in range(bad)], images)
    write_dataset(target, records)
    return planted


def train(world, data, run_dir, *extra):
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage
    recipe = smoke_recipe("stage1", *data_overrides(data), f"training.per_device_batch={BATCH}",
                          "training.dataloader_num_workers=2", "checkpointing.resume_every_steps=0",
                          f"output={run_dir}/out", *extra)
    return train_stage(recipe, smoke_layout(world), run_dir=run_dir)


def test_one_percent_bad_samples_are_skipped_and_listed(tiny_world, tmp_path):
    planted = planted_dataset(tiny_world, tmp_path / "data", bad=6)
    result = train(tiny_world, tmp_path / "data", tmp_path / "run")
    assert result.global_steps == SAMPLES // BATCH and result.skipped == 6
    lines = [json.loads(line) for line in (tmp_path / "run" / "skips.jsonl").read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(planted)  # exactly them, each once
    for line in lines:
        assert REASON_WORDS[planted[line["id"]]] in line["reason"], line
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert manifest["metrics"]["skipped_samples"] == 6
    assert manifest["extra"]["skips_file"] == str(tmp_path / "run" / "skips.jsonl")


def test_five_percent_bad_samples_stop_the_run_naming_threshold_and_file(tiny_world, tmp_path):
    from llava.errors import KitError
    planted = planted_dataset(tiny_world, tmp_path / "data", bad=30)
    with pytest.raises(KitError) as err:
        train(tiny_world, tmp_path / "data", tmp_path / "run")
    message = str(err.value)
    skips = tmp_path / "run" / "skips.jsonl"
    assert "data.max_skip_fraction=0.01" in message and "(6 samples)" in message and str(skips) in message
    assert "Traceback" not in message  # raised in a dataloader worker, reported cleanly
    recorded = [json.loads(line)["id"] for line in skips.read_text().splitlines()]
    assert len(recorded) == len(set(recorded)) >= 7 and set(recorded) <= set(planted)
    assert not (tmp_path / "run" / "out").exists()


def test_collator_drops_a_bad_sample_instead_of_substituting_one(tmp_path):
    from llava.data.collator import Collator, SkipLedger
    from llava.data.dataset import SkippedSample
    ledger = SkipLedger(tmp_path / "skips.jsonl", dataset_size=300, max_fraction=0.01)
    collator = Collator(pad_token_id=0, pixel_key="pixel_values", ledger=ledger)
    good = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = collator([good[0], SkippedSample("bad-1", 4, "missing image x.png"), good[1]])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]  # two rows: nothing took the bad one's place
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    collator([SkippedSample("bad-1", 4, "missing image x.png")])  # seen again (next epoch): counted once
    assert ledger.seen_ids() == {"bad-1"} and len((tmp_path / "skips.jsonl").read_text().splitlines()) == 1


def test_skip_budget_has_no_float_floor_error(tmp_path):
    from llava.data.collator import SkipLedger
    assert SkipLedger(tmp_path / "a", 100, 0.29).budget == 29  # int(0.29 * 100) would give 28
    assert SkipLedger(tmp_path / "b", 48, 0.01).budget == 0
