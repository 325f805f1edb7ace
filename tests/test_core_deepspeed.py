"""ZeRO-3 on CPU through the real CLI: 2 processes equal 1 process at the same global batch.

The stage-2 data holds text-only samples, so this also shows they don't hang multi-process ZeRO-3.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from train_cli import limit_for, logged_steps, run_train, weights

ZERO3_LIMIT_S = 600  # one ZeRO-3 run (the first one on a machine builds DeepSpeed's op)
pytestmark = [pytest.mark.slow, limit_for(ZERO3_LIMIT_S, ZERO3_LIMIT_S)]  # a 1-process and a 2-process run

# A whole epoch: its last step mixes image and text-only samples across the two ranks.
OVERRIDES = ["init.from_checkpoint={checkpoints}/stage1", "deepspeed=cpu-test",
             "training.logging_steps=1", "training.per_device_batch=1", "training.grad_accum=4",
             "training.num_gpus=1", "training.save_strategy=no", "training.group_by_modality_length=true"]


def run_cli(world, name: str, nproc: int) -> tuple[list[dict], dict]:
    done = run_train(world, "stage2", name, OVERRIDES, nproc=nproc, timeout=ZERO3_LIMIT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return logged_steps(world, name), weights(world / "checkpoints" / name)


def test_two_process_zero3_equals_one_process(stage1_run, tiny_world):
    one_steps, one_weights = run_cli(tiny_world, "zero3-1proc", 1)
    two_steps, two_weights = run_cli(tiny_world, "zero3-2proc", 2)
    assert len(one_steps) == len(two_steps) == 64 // 4
    for a, b in zip(one_steps, two_steps):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
    assert one_weights.keys() == two_weights.keys()
    initial = load_file(tiny_world / "checkpoints" / "stage1" / "model.safetensors")
    for key in one_weights:
        assert torch.allclose(one_weights[key], two_weights[key], atol=1e-5), key
    assert one_weights.keys() == initial.keys()  # HF key names survive the ZeRO-3 gather
    moved = [k for k in one_weights if not torch.equal(one_weights[k], initial[k])]
    assert any("vision_tower" in k for k in moved) and any("language_model" in k for k in moved)
    # the resumable checkpoint holds the same weights under the same names (from_pretrained-loadable)
    resumable = sorted((tiny_world / "runs" / "zero3-2proc" / "trainer").glob("checkpoint-*/model.safetensors"))
    assert resumable, "no resumable checkpoint was written"
    last = load_file(resumable[-1])
    assert last.keys() == initial.keys() and all(torch.equal(last[k], two_weights[k]) for k in last)
