"""Two processes (DeepSpeed ZeRO-3 `cpu-test` profile, gloo, through `llava-kit train --nproc 2`, which
runs torchrun and passes signals on): a kill -9 of the whole job, or a SIGTERM to the launcher as `docker stop` sends
it, then the same command, ends bit-identical to an uninterrupted run; the planted bad samples,
recorded by dataloader workers of both ranks, are listed once each across the resume.
"""

from __future__ import annotations

import json
import signal
import subprocess

import psutil
import pytest

from train_cli import (TRAIN_LIMIT_S, assert_bit_identical, data_overrides, events, kill_tree, limit_for,
                       new_dataset, output_of, plant_faults, run_train, start_train, wait_for, write_dataset)

# the module's reference run + the longest test (a first checkpoint within 180 s, the stop, the rerun)
pytestmark = [pytest.mark.slow, limit_for(TRAIN_LIMIT_S, 180 + 120, TRAIN_LIMIT_S)]

# The whole tiny stage-2 epoch: text-only steps and the last step, which mixes image and text-only
# samples across the ranks (image-less micro-batches carry the collator's blank-image row, so every
# rank gathers the same ZeRO-3 parameters).
STEPS, KILL_AT, EVERY = 8, 5, 2
GRACE_S = 60  # LLAVA_KIT_STOP_GRACE_S for the SIGTERM runs; torchrun waits this + 5 s before SIGKILL


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
            f"training.max_steps={STEPS}", f"checkpointing.resume_every_steps={EVERY}", "training.save_strategy=no",
            "training.logging_steps=1", "training.dataloader_num_workers=1", "data.max_skip_fraction=0.05"]


def skipped_ids(world, name) -> list[str]:
    return [json.loads(line)["id"] for line in (world / "runs" / name / "skips.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(stage1_run, tiny_world, planted):
    """The uninterrupted two-process run every interrupted one must end equal to."""
    done = run_train(tiny_world, "stage2", "rel-zero3-ref", overrides(planted[0]), nproc=2)
    assert done.returncode == 0, done.stderr[-4000:]
    return tiny_world / "checkpoints" / "rel-zero3-ref"


def test_two_process_zero3_kill_and_resume_is_bit_identical(reference, tiny_world, planted):
    data, faults = planted
    killed = run_train(tiny_world, "stage2", "rel-zero3", overrides(data), nproc=2,
                       LLAVA_KIT_TEST_KILL_AT_STEP=str(KILL_AT))
    died = f"Signal {int(signal.SIGKILL)} (SIGKILL)"
    assert killed.returncode != 0 and died in killed.stderr, killed.stderr[-3000:]
    assert not (tiny_world / "checkpoints" / "rel-zero3").exists()
    again = run_train(tiny_world, "stage2", "rel-zero3", overrides(data), nproc=2)
    assert again.returncode == 0, again.stderr[-4000:]
    resumes = [e["step"] for e in events(tiny_world, "rel-zero3") if e["event"] == "resume"]
    assert resumes == [KILL_AT // EVERY * EVERY]
    assert_bit_identical(reference, tiny_world / "checkpoints" / "rel-zero3")
    for name in ("rel-zero3-ref", "rel-zero3"):
        assert sorted(skipped_ids(tiny_world, name)) == sorted(faults), name
        body = json.loads((tiny_world / "checkpoints" / name / "manifest.json").read_text())
        assert body["metrics"]["skipped_samples"] == len(faults) and body["extra"]["world_size"] == 2


def start_and_wait_for_first_checkpoint(tiny_world, data, name: str, log):
    """`llava-kit train --nproc 2` in the background, returned once checkpoint-EVERY is complete."""
    process = start_train(tiny_world, "stage2", name, overrides(data), nproc=2, output=log,
                          LLAVA_KIT_STOP_GRACE_S=str(GRACE_S))
    marker = tiny_world / "runs" / name / "trainer" / f"checkpoint-{EVERY}" / "COMPLETE.json"
    wait_for(marker.exists, process, timeout=180, what="the first checkpoint")
    return process


def wait_for_exit(process, grace_s: float) -> None:
    """Fails (and kills the whole job) if the process is still running after the grace."""
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        raise AssertionError(f"still running {grace_s} s after SIGTERM:\n{output_of(process)[-3000:]}") from None


def assert_stopped_by_sigterm(tiny_world, name: str, output: str):
    """Both ranks left at the same step after a complete SIGTERM save, and said how to resume."""
    from llava.train.checkpointing import latest_checkpoint
    saved = latest_checkpoint(tiny_world / "runs" / name / "trainer")
    assert saved is not None and EVERY < saved.step < STEPS, output[-3000:]
    assert saved.marker["reason"] == "SIGTERM" and saved.marker["fingerprint"]["world_size"] == 2
    said = f"error: {name} stopped by SIGTERM after step {saved.step}; resumable state is in {saved.path}. " \
           "Run the same command again to resume."
    assert output.count(said) == 2, output[-3000:]  # one line per rank: both stopped at this step
    assert "DataLoader worker" not in output and "Traceback" not in output.split(said)[0]
    lifecycle = [(e["event"], e.get("step")) for e in events(tiny_world, name)]
    assert lifecycle[-2:] == [("checkpoint", saved.step), ("stop", saved.step)]
    final = tiny_world / "checkpoints" / name
    assert not final.exists() and not final.with_name(f"{name}.tmp").exists()  # no final save was begun
    return saved


def test_two_process_sigterm_to_launcher_saves_and_resumes_bit_identical(reference, tiny_world, planted, tmp_path):
    """`docker stop` signals PID 1, here the kit's launcher: it passes SIGTERM to torchrun, which forwards it to
    each worker's process group,
    dataloader workers included; the ranks finish the step, agree, save once, exit; the rerun resumes."""
    data, faults = planted
    name = "rel-zero3-sigterm"
    process = start_and_wait_for_first_checkpoint(tiny_world, data, name, tmp_path / "term.log")
    process.send_signal(signal.SIGTERM)
    wait_for_exit(process, GRACE_S)
    output = output_of(process)
    assert process.returncode != 0, output[-3000:]  # as one process (exit 2): stopped is not finished
    assert output.count("SIGTERM received") == 2  # one request per rank (forwarded, or adopted from the other)
    saved = assert_stopped_by_sigterm(tiny_world, name, output)
    again = run_train(tiny_world, "stage2", name, overrides(data), nproc=2)
    assert again.returncode == 0, again.stderr[-4000:]
    assert [e["step"] for e in events(tiny_world, name) if e["event"] == "resume"] == [saved.step]
    assert_bit_identical(reference, tiny_world / "checkpoints" / name)
    assert sorted(skipped_ids(tiny_world, name)) == sorted(faults)


def test_two_process_sigterm_to_one_rank_stops_both_at_the_same_step(stage1_run, tiny_world, planted, tmp_path):
    """A signal only one rank sees (one preempted node, one killed worker): the other rank learns of it
    at the step end and leaves through the same stop path, instead of going on to the final save alone."""
    name = "rel-zero3-rank-sigterm"
    process = start_and_wait_for_first_checkpoint(tiny_world, planted[0], name, tmp_path / "term.log")
    (torchrun,) = psutil.Process(process.pid).children()  # the launcher -> torchrun -> one worker per rank
    workers = {child.environ().get("RANK"): child for child in torchrun.children()}
    workers["1"].send_signal(signal.SIGTERM)
    wait_for_exit(process, GRACE_S)
    output = output_of(process)
    assert process.returncode != 0, output[-3000:]
    assert_stopped_by_sigterm(tiny_world, name, output)
    assert output.count("SIGTERM received: finishing the current step") == 1  # rank 1 only
    assert output.count("SIGTERM received by another rank: finishing the current step") == 1  # rank 0
