"""Two processes (DeepSpeed ZeRO-3 `cpu-test` profile, gloo, through `llava-kit train --nproc 2`): a kill -9
of the whole job, then the same command, ends bit-identical to an uninterrupted run; the planted bad
samples, recorded by dataloader workers of both ranks, are listed once each across the resume.
"""

from __future__ import annotations

import json
import signal

import pytest

from train_cli import (assert_bit_identical, data_overrides, events, new_dataset, plant_faults, run_train,
                       write_dataset)

pytestmark = pytest.mark.slow

# Six steps: the image part of the tiny stage-2 epoch (every sample with an image, the planted ones
# included, is seen). The text-only tail is left out on purpose: a micro-batch with an image on one
# rank and none on the other desynchronises ZeRO-3's gathers (gloo "collective mismatch") in the
# current forward, which is a separate bug (reported), not a resume question.
STEPS, KILL_AT, EVERY = 6, 5, 2


@pytest.fixture(scope="module")
def planted(tiny_world, tmp_path_factory):
    """Stage-2 data with three broken image samples (within data.max_skip_fraction=0.05 of 64)."""
    target = tmp_path_factory.mktemp("zero3-data")
    records, images = new_dataset(tiny_world / "datasets" / "stage2", target)
    with_images = [i for i, r in enumerate(records) if r.get("image")]
    faults = plant_faults(records, with_images[5:45:15], images)
    write_dataset(target, records)
    return target, faults


def overrides(data) -> list[str]:
    return [*data_overrides(data), "init.from_checkpoint={checkpoints}/stage1", "deepspeed=cpu-test",
            "training.per_device_batch=2", "training.grad_accum=4", "training.num_gpus=1",
            f"training.max_steps={STEPS}", f"checkpointing.resume_every_steps={EVERY}", "training.save_strategy=no", "training.logging_steps=1",
            "training.dataloader_num_workers=1", "data.max_skip_fraction=0.05"]


def skipped_ids(world, name) -> list[str]:
    return [json.loads(line)["id"] for line in (world / "runs" / name / "skips.jsonl").read_text().splitlines()]


def test_two_process_zero3_kill_and_resume_is_bit_identical(stage1_run, tiny_world, planted):
    data, faults = planted
    reference = run_train(tiny_world, "stage2", "rel-zero3-ref", overrides(data), nproc=2)
    assert reference.returncode == 0, reference.stderr[-4000:]
    killed = run_train(tiny_world, "stage2", "rel-zero3", overrides(data), nproc=2,
                       LLAVA_KIT_TEST_KILL_AT_STEP=str(KILL_AT))
    died = f"Signal {int(signal.SIGKILL)} (SIGKILL)"
    assert killed.returncode != 0 and died in killed.stderr, killed.stderr[-3000:]
    assert not (tiny_world / "checkpoints" / "rel-zero3").exists()
    again = run_train(tiny_world, "stage2", "rel-zero3", overrides(data), nproc=2)
    assert again.returncode == 0, again.stderr[-4000:]
    resumes = [e["step"] for e in events(tiny_world, "rel-zero3") if e["event"] == "resume"]
    assert resumes == [KILL_AT // EVERY * EVERY]
    assert_bit_identical(tiny_world / "checkpoints" / "rel-zero3-ref", tiny_world / "checkpoints" / "rel-zero3")
    for name in ("rel-zero3-ref", "rel-zero3"):
        assert sorted(skipped_ids(tiny_world, name)) == sorted(faults), name
        body = json.loads((tiny_world / "checkpoints" / name / "manifest.json").read_text())
        assert body["metrics"]["skipped_samples"] == len(faults) and body["extra"]["world_size"] == 2
