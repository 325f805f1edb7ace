"""Plain DDP (no DeepSpeed) on CPU through the real CLI: 2 processes equal 1 process at the same global batch.

Two bugs hid here. accelerate's state made for gloo without `cpu=True` meant "no distribution": the
model was never wrapped in DDP, each rank trained its own copy on half the data and rank 0's was
saved (llava.train.distributed). And under gradient checkpointing transformers turned DDP's search
for unused parameters off, so the vision tower's post_layernorm (never on the loss path) failed the
second step (llava.train.run.training_arguments). Gradient checkpointing is on here for that reason.
"""

from __future__ import annotations

import json

import pytest
import torch

from train_cli import TRAIN_LIMIT_S, assert_bit_identical, events, limit_for, logged_steps, run_train, weights

pytestmark = [pytest.mark.slow, limit_for(3 * TRAIN_LIMIT_S)]  # the module's 2-process run + two more

# A whole epoch of the tiny stage 2 (64 samples, 8 per step): image steps, text-only steps and the last
# step that mixes both across the ranks (image-less micro-batches carry the collator's blank image).
STEPS, KILL_AT, EVERY = 8, 5, 2
OVERRIDES = ["init.from_checkpoint={checkpoints}/stage1", "deepspeed=null", "training.per_device_batch=2",
             "training.grad_accum=4", "training.num_gpus=1", "training.gradient_checkpointing=true",
             f"training.max_steps={STEPS}", "training.logging_steps=1", "training.save_strategy=no",
             f"checkpointing.resume_every_steps={EVERY}"]


def train(world, name: str, nproc: int) -> tuple[list[dict], dict[str, torch.Tensor]]:
    done = run_train(world, "stage2", name, OVERRIDES, nproc=nproc)
    assert done.returncode == 0, done.stderr[-4000:]
    body = json.loads((world / "checkpoints" / name / "manifest.json").read_text())
    assert body["extra"]["world_size"] == nproc and body["metrics"]["global_steps"] == STEPS
    return logged_steps(world, name), weights(world / "checkpoints" / name)


@pytest.fixture(scope="module")
def two_process(stage1_run, tiny_world):
    return train(tiny_world, "ddp-2proc", 2)


def test_two_process_ddp_equals_one_process(two_process, tiny_world):
    one_steps, one_weights = train(tiny_world, "ddp-1proc", 1)
    two_steps, two_weights = two_process
    assert [s["step"] for s in one_steps] == [s["step"] for s in two_steps] == list(range(1, STEPS + 1))
    for a, b in zip(one_steps, two_steps):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), a["step"]
    assert one_weights.keys() == two_weights.keys()
    for key in one_weights:
        assert torch.allclose(one_weights[key], two_weights[key], atol=1e-5), key
    initial = weights(tiny_world / "checkpoints" / "stage1")
    assert one_weights.keys() == initial.keys()
    moved = [k for k in two_weights if not torch.equal(two_weights[k], initial[k])]
    assert any("vision_tower" in k for k in moved) and any("language_model" in k for k in moved)


def test_two_process_ddp_kill_and_resume_is_bit_identical(two_process, tiny_world):
    """kill -9 of the whole DDP job, then the same command: per-rank RNG, optimizer and sampler state resume."""
    killed = run_train(tiny_world, "stage2", "ddp-killed", OVERRIDES, nproc=2, LLAVA_KIT_TEST_KILL_AT_STEP=str(KILL_AT))
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    again = run_train(tiny_world, "stage2", "ddp-killed", OVERRIDES, nproc=2)
    assert again.returncode == 0, again.stderr[-4000:]
    assert [e["step"] for e in events(tiny_world, "ddp-killed") if e["event"] == "resume"] == [KILL_AT // EVERY * EVERY]
    assert_bit_identical(tiny_world / "checkpoints" / "ddp-2proc", tiny_world / "checkpoints" / "ddp-killed")
