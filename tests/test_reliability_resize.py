"""Resume on another number of processes with the same global batch (llava.train.resize).

A stage trained by 2 processes is killed (-9) mid-stage and resumed by 1, or the other way round;
the continued per-step losses must equal an uninterrupted 2-process run's. Plain DDP (gloo) runs in
the default tier; DeepSpeed ZeRO-2 and ZeRO-3 (re-partitioned through DeepSpeed's universal
checkpoint) and the 1 -> 2 direction in the extended tier. The tiny stage 2, 8 samples per step
(per_device_batch 2 x grad_accum 4 on 1 process = 2 x 2 on 2), 8 steps, saves every 2 steps.
"""

from __future__ import annotations

import json
import signal

import pytest

from train_cli import TRAIN_LIMIT_S, events, limit_for, logged_steps, run_train

STEPS, KILL_AT, EVERY = 8, 5, 2
RESUMED_AT = KILL_AT // EVERY * EVERY
# Another world size adds the gradients up in another order (2 ranks' all-reduce vs 4 micro-batches
# accumulated on one; grad norms differ by ~1e-9), so losses after the resume may differ in the last bits.
# Measured at most 1.5e-7; uninterrupted 1- and 2-process ZeRO-3 runs differ by 7.7e-8. (Before LlavaTrainer
# repaired DeepSpeed's universal ZeRO-3 load, llava.train.trainer._repair_universal_load, ZeRO-3 drifted 4.1e-4.)
FIRST_STEP_RTOL = 1e-6
LOSS_RTOL = 1e-5
BACKENDS = {"ddp": "deepspeed=null", "zero2": "deepspeed=cpu-test-zero2", "zero3": "deepspeed=cpu-test"}


def step_samples(lengths: list[int], world: int, per_device: int, global_batch: int) -> list[list[int]]:
    """The samples of each optimizer step as the ranks read them: the kit's sampler, dealt to each rank by
    accelerate's BatchSamplerShard (what the Trainer's prepared dataloader does), accumulation rescaled."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    from llava.data.sampler import ModalityLengthSampler
    accumulation = global_batch // (per_device * world)
    per_rank = []
    for rank in range(world):
        batches = BatchSampler(ModalityLengthSampler(lengths, global_batch, seed=7), per_device, drop_last=False)
        per_rank.append(list(BatchSamplerShard(batches, num_processes=world, process_index=rank)))
    steps = len(per_rank[0]) // accumulation
    return [sorted(i for r in range(world) for batch in per_rank[r][s * accumulation:(s + 1) * accumulation]
                   for i in batch) for s in range(steps)]


def test_each_optimizer_step_holds_the_same_samples_on_any_world_size():
    import random
    draw = random.Random(3)
    lengths = [draw.choice([1, -1]) * draw.randint(5, 400) for _ in range(96)]  # image (> 0) and text-only samples
    one = step_samples(lengths, 1, 2, 16)
    assert len(one) == 6 and sorted(i for step in one for i in step) == list(range(96))
    for world in (2, 4, 8):
        assert step_samples(lengths, world, 2, 16) == one, world


def test_a_world_size_that_cannot_keep_the_global_batch_is_refused_with_the_nearest_that_can():
    from llava.errors import KitError
    from llava.recipe import TrainingSpec
    from llava.train.resize import grad_accum_for, nearest_world_sizes
    spec = TrainingSpec(per_device_batch=4, grad_accum=6, num_gpus=2, learning_rate=1e-5, model_max_length=64)
    assert [grad_accum_for(spec, n, "r.yaml") for n in (1, 2, 3, 4, 6, 12)] == [12, 6, 4, 3, 2, 1]
    assert nearest_world_sizes(12, 5) == [4, 6] and nearest_world_sizes(12, 13) == [12]
    with pytest.raises(KitError, match=r"global batch 48 .* cannot be kept on 5 processes.*Run on 4 or 6 processes "
                                       r"\(any of \[1, 2, 3, 4, 6, 12\] works\)"):
        grad_accum_for(spec, 5, "r.yaml")
    free = spec.model_copy(update={"keep_global_batch": False})
    assert grad_accum_for(free, 5, "r.yaml") == 6


def test_the_launcher_refuses_such_a_world_size_before_starting_torchrun(tmp_path):
    import subprocess
    import sys
    from llava.recipe import STAGES_DIR
    done = subprocess.run([sys.executable, "-m", "llava.cli", "train", str(STAGES_DIR / "smoke" / "stage2.yaml"),
                           "--set=training.grad_accum=4", "--nproc=3", "--print-launch"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "Run on 2 or 4 processes" in done.stderr


def overrides(backend: str) -> list[str]:
    return ["init.from_checkpoint={checkpoints}/stage1", BACKENDS[backend], "training.per_device_batch=2",
            "training.grad_accum=4", "training.num_gpus=1", f"training.max_steps={STEPS}", "training.logging_steps=1",
            "training.save_strategy=no", "training.group_by_modality_length=true",
            f"checkpointing.resume_every_steps={EVERY}"]


FIRST_DEEPSPEED_S = 600  # the first DeepSpeed run on a machine builds DeepSpeed's CPU communication op


def train(world, backend: str, name: str, nproc: int, timeout: float = TRAIN_LIMIT_S, **env: str):
    return run_train(world, "stage2", name, overrides(backend), nproc=nproc, timeout=timeout, **env)


def reference_steps(world, backend: str) -> dict[int, dict]:
    """The uninterrupted 2-process run of `backend` (trained once per session)."""
    name = f"resize-{backend}-ref"
    if not (world / "checkpoints" / name).is_dir():
        done = train(world, backend, name, 2, timeout=FIRST_DEEPSPEED_S)
        assert done.returncode == 0, done.stderr[-4000:]
    return {s["step"]: s for s in logged_steps(world, name)}


def kill_then_resize(world, backend: str, before: int, after: int) -> tuple[str, dict]:
    """Train on `before` processes, die at step KILL_AT, rerun on `after`; returns the run name and its final marker."""
    name = f"resize-{backend}-{before}to{after}"
    killed = train(world, backend, name, before, LLAVA_KIT_TEST_KILL_AT_STEP=str(KILL_AT))
    assert killed.returncode == -signal.SIGKILL or "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    again = train(world, backend, name, after)
    assert again.returncode == 0, again.stderr[-4000:]
    from llava.train.checkpointing import latest_checkpoint
    final = latest_checkpoint(world / "runs" / name / "trainer")
    assert final is not None and final.step == STEPS
    return name, final.marker


def assert_continues_reference(world, backend: str, before: int, after: int) -> None:
    """The resumed run's steps after the resume point equal the reference's (printed: the relative differences)."""
    expected = reference_steps(world, backend)
    name, marker = kill_then_resize(world, backend, before, after)
    resumes = [e["step"] for e in events(world, name) if e["event"] == "resume"]
    assert resumes == [RESUMED_AT]
    steps = {s["step"]: s for s in logged_steps(world, name)}
    assert sorted(steps) == sorted(expected) == list(range(1, STEPS + 1))
    got = {step: entry["loss"] for step, entry in steps.items()}
    diffs = {s: abs(got[s] - expected[s]["loss"]) / abs(expected[s]["loss"]) for s in range(RESUMED_AT + 1, STEPS + 1)}
    print(f"{backend} {before}->{after}: relative loss difference per step after the resume: "
          + ", ".join(f"{s}: {d:.1e}" for s, d in diffs.items()))
    assert diffs[RESUMED_AT + 1] <= FIRST_STEP_RTOL and max(diffs.values()) <= LOSS_RTOL, (got, expected)
    assert all(steps[s]["learning_rate"] == expected[s]["learning_rate"] for s in steps)  # the schedule resumed
    # the same global batch: 2 x 4 x 1 before, 2 x 2 x 2 (or the reverse) after
    fingerprint = marker["fingerprint"]
    assert fingerprint["world_size"] == after and fingerprint["grad_accum"] * after == 4
    (resize,) = marker["resizes"]
    assert resize["from"] == f"checkpoint-{RESUMED_AT}" and resize["world_size"] == [before, after]
    conversions = " | ".join(resize["conversions"])
    assert f"gradient accumulation {4 // before} -> {4 // after}" in conversions
    assert ("universal checkpoint" in conversions) == (backend != "ddp")
    manifest = json.loads((world / "checkpoints" / name / "manifest.json").read_text())
    assert manifest["extra"]["resizes"] == marker["resizes"]
    assert not (world / "runs" / name / "trainer" / "resized").exists()  # the converted copy is dropped


@pytest.mark.slow
@limit_for(3 * TRAIN_LIMIT_S)
def test_ddp_two_processes_killed_resume_on_one(stage1_run, tiny_world):
    assert_continues_reference(tiny_world, "ddp", 2, 1)


@pytest.mark.extended
@limit_for(FIRST_DEEPSPEED_S, 2 * TRAIN_LIMIT_S)
@pytest.mark.parametrize("backend", ["ddp", "zero2", "zero3"])
def test_one_process_killed_resume_on_two(stage1_run, tiny_world, backend):
    assert_continues_reference(tiny_world, backend, 1, 2)


@pytest.mark.extended
@limit_for(FIRST_DEEPSPEED_S, 2 * TRAIN_LIMIT_S)
@pytest.mark.parametrize("backend", ["zero2", "zero3"])
def test_deepspeed_two_processes_killed_resume_on_one(stage1_run, tiny_world, backend):
    assert_continues_reference(tiny_world, backend, 2, 1)
