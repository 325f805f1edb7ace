"""A stage killed any way you like, then rerun with the same command, ends bit-identical to an uninterrupted run.

Tiny stage 2 on CPU, one process: 48 optimizer steps (6 epochs of 8), resumable state every 6 steps
so most checkpoints fall mid-epoch (sampler position, RNG and dataloader order must all come back).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from train_cli import TRAIN_LIMIT_S, assert_bit_identical, events, limit_for, run_train, start_train, wait_for

# the module's reference run + the longest test (SIGTERM: two waits and a communicate of 120 s, one rerun)
pytestmark = limit_for(TRAIN_LIMIT_S, 3 * 120, TRAIN_LIMIT_S)

STEPS, EVERY = 48, 6
OVERRIDES = ["init.from_checkpoint={checkpoints}/stage1", f"training.max_steps={STEPS}",
             f"checkpointing.resume_every_steps={EVERY}", "training.save_strategy=no", "training.logging_steps=1"]
SECRET = "hf_" + "reliabilityTestToken" + "0123456789abcdef"
DIGEST = "sha256:" + "ab" * 32


def checkpoint_dir(world: Path, name: str) -> Path:
    return world / "checkpoints" / name


def trainer_dir(world: Path, name: str, runs: Path | None = None) -> Path:
    return (runs or world / "runs") / name / "trainer"


def manifest(world: Path, name: str) -> dict:
    return json.loads((checkpoint_dir(world, name) / "manifest.json").read_text())


def resumed_step(world: Path, name: str, runs: Path | None = None) -> int:
    resumes = [e for e in events(world, name, runs) if e["event"] == "resume"]
    assert len(resumes) == 1, resumes
    return resumes[0]["step"]


def assert_same_as_reference(world: Path, name: str, resumed_from: int) -> None:
    assert_bit_identical(checkpoint_dir(world, "rel-ref"), checkpoint_dir(world, name))
    ours, ref = manifest(world, name), manifest(world, "rel-ref")
    assert ours["metrics"]["global_steps"] == STEPS and ours["extra"]["resumed_from"] == f"checkpoint-{resumed_from}"
    assert ours["metrics"]["train_loss"] == pytest.approx(ref["metrics"]["train_loss"], rel=1e-6)


@pytest.fixture(scope="module")
def reference(stage1_run, tiny_world):
    """The uninterrupted run (with a token and an image digest in its environment, for the manifest test)."""
    done = run_train(tiny_world, "stage2", "rel-ref", OVERRIDES, HF_TOKEN=SECRET, LLAVA_KIT_IMAGE_DIGEST=DIGEST)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_kill_9_at_a_random_step_then_rerun_is_bit_identical(reference, tiny_world):
    step = int(os.environ.get("RELIABILITY_KILL_STEP") or random.randrange(EVERY + 1, STEPS))
    killed = run_train(tiny_world, "stage2", "rel-kill", OVERRIDES, LLAVA_KIT_TEST_KILL_AT_STEP=str(step))
    assert killed.returncode == -signal.SIGKILL, f"kill at step {step}: {killed.stderr[-2000:]}"
    assert not checkpoint_dir(tiny_world, "rel-kill").exists()
    again = run_train(tiny_world, "stage2", "rel-kill", OVERRIDES)
    assert again.returncode == 0, again.stderr[-3000:]
    last_saved = (step - 1) // EVERY * EVERY  # the kill lands before step `step` is saved
    assert resumed_step(tiny_world, "rel-kill") == last_saved, f"killed at step {step}"
    assert_same_as_reference(tiny_world, "rel-kill", last_saved)


def test_save_now_then_sigterm_save_and_resume_bit_identical(reference, tiny_world):
    from llava.train.checkpointing import latest_checkpoint
    run_dir = tiny_world / "runs" / "rel-term"
    process = start_train(tiny_world, "stage2", "rel-term", OVERRIDES)
    wait_for((run_dir / "trainer" / f"checkpoint-{EVERY}" / "COMPLETE.json").exists, process, what="first checkpoint")
    (run_dir / "SAVE_NOW").touch()
    wait_for(lambda: not (run_dir / "SAVE_NOW").exists(), process, what="SAVE_NOW to be handled")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2, err[-3000:]
    saved = latest_checkpoint(run_dir / "trainer")
    assert saved is not None and EVERY < saved.step < STEPS and saved.marker["reason"] == "SIGTERM"
    assert f"stopped by SIGTERM after step {saved.step}" in err and str(saved.path) in err
    assert "Run the same command again to resume" in err
    kinds = [(e["event"], e.get("reason")) for e in events(tiny_world, "rel-term")]
    assert ("checkpoint", "SAVE_NOW") in kinds and ("save_now", None) in kinds and kinds[-1] == ("stop", None)
    assert not checkpoint_dir(tiny_world, "rel-term").exists()
    again = run_train(tiny_world, "stage2", "rel-term", OVERRIDES)
    assert again.returncode == 0, again.stderr[-3000:]
    assert resumed_step(tiny_world, "rel-term") == saved.step
    assert_same_as_reference(tiny_world, "rel-term", saved.step)


@pytest.mark.parametrize("phase", ["staged", "unmarked"])
def test_kill_during_a_save_keeps_the_previous_checkpoint(reference, tiny_world, phase):
    from transformers.trainer_utils import get_last_checkpoint

    from llava.model.checkpoint import load_for_inference
    from llava.train.checkpointing import latest_checkpoint
    name, step = f"rel-savekill-{phase}", 2 * EVERY
    killed = run_train(tiny_world, "stage2", name, OVERRIDES, LLAVA_KIT_TEST_KILL_IN_SAVE=f"{step}:{phase}")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = trainer_dir(tiny_world, name)
    half = folder / f"checkpoint-{step}" if phase == "unmarked" else folder / ".staging" / f"checkpoint-{step}"
    assert (half / "model.safetensors").is_file() and not (half / "COMPLETE.json").exists()
    if phase == "unmarked":  # transformers' own finder would resume from the half-saved folder
        assert get_last_checkpoint(str(folder)) == str(half)
    assert latest_checkpoint(folder).step == EVERY
    load_for_inference(folder / f"checkpoint-{EVERY}")
    again = run_train(tiny_world, "stage2", name, OVERRIDES)
    assert again.returncode == 0, again.stderr[-3000:]
    cleanup = [e for e in events(tiny_world, name) if e["event"] == "cleanup"]
    assert cleanup and (half.name if phase == "unmarked" else ".staging") in cleanup[0]["removed"]
    assert resumed_step(tiny_world, name) == EVERY
    assert_same_as_reference(tiny_world, name, EVERY)


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(reference, tiny_world, tmp_path):
    from llava.train.checkpointing import latest_checkpoint
    runs = tmp_path / "small-disk"
    runs.mkdir()
    size = sum(latest_checkpoint(trainer_dir(tiny_world, "rel-ref")).marker["files"].values())
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(runs)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up (needs root/CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        # preflight sizes the disk for every checkpoint kept, so the disk fills after it passed, as when
        # another job writes to it: the run pauses in step EVERY + 1 while the test fills the disk
        running = start_train(tiny_world, "stage2", "rel-full", OVERRIDES, output=tmp_path / "full.log",
                              LLAVA_KIT_RUNS=str(runs), LLAVA_KIT_TEST_STALL_AT_STEP=f"{EVERY + 1}:0:20")
        first, second = trainer_dir(tiny_world, "rel-full", runs) / f"checkpoint-{EVERY}", f"checkpoint-{2 * EVERY}"
        wait_for(lambda: (first / "COMPLETE.json").is_file(), running, what=f"{first}/COMPLETE.json")
        filler = runs / "filler.bin"
        free = os.statvfs(runs).f_bavail * os.statvfs(runs).f_frsize
        with open(filler, "wb") as sink:
            sink.write(b"\0" * max(0, free - size // 2))
        running.wait(timeout=TRAIN_LIMIT_S)
        stderr = (tmp_path / "full.log").read_text()
        assert running.returncode == 2, stderr[-3000:]
        assert f"could not save resumable state {second}" in stderr and "MiB free on that disk" in stderr
        assert f"previous complete checkpoint {first} (step {EVERY}) is intact" in stderr
        assert latest_checkpoint(first.parent).path == first
        filler.unlink()
        again = run_train(tiny_world, "stage2", "rel-full", OVERRIDES, LLAVA_KIT_RUNS=str(runs))
        assert again.returncode == 0, again.stderr[-3000:]
        assert resumed_step(tiny_world, "rel-full", runs) == EVERY
        assert_same_as_reference(tiny_world, "rel-full", EVERY)
    finally:
        subprocess.run(["umount", str(runs)], capture_output=True)


def test_run_manifest_is_complete_and_holds_no_secret(reference, tiny_world):
    from llava.manifest import manifest_hash
    from llava.recipe import STAGES_DIR, load_recipe
    body = manifest(tiny_world, "rel-ref")
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml",
                         ["name=rel-ref", "output={checkpoints}/rel-ref", *OVERRIDES])
    assert body["kind"] == "checkpoint" and body["extra"]["stage"] == "rel-ref"
    assert body["metrics"]["global_steps"] == STEPS and body["metrics"]["skipped_samples"] == 0
    assert body["metrics"]["train_loss"] > 0 and body["started"] < body["finished"]
    assert body["recipe_hash"] == recipe.content_hash()
    assert body["inputs"] == {"data": manifest_hash(tiny_world / "datasets" / "stage2"),
                              "checkpoint": manifest_hash(tiny_world / "checkpoints" / "stage1")}
    assert {"torch", "transformers", "deepspeed", "accelerate", "safetensors"} <= set(body["versions"])
    assert body["git_commit"] and body["image_digest"] == DIGEST
    assert body["extra"]["recipe"]["model"]["image_token"] == "<image>"  # not mistaken for a secret
    assert sorted(body["files"]) == sorted(p.name for p in checkpoint_dir(tiny_world, "rel-ref").iterdir()
                                           if p.name != "manifest.json")
    assert not [p for p in body["files"] if p.endswith((".bin", ".pt", ".pth", ".pkl"))]  # safetensors only
    places = [checkpoint_dir(tiny_world, "rel-ref"), tiny_world / "runs" / "rel-ref"]
    leaked = [p for root in places for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked and SECRET not in reference.stdout + reference.stderr
