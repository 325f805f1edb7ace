"""On a CUDA device: kill -9 and resume stay bit-identical (tiny model, fp32 and bf16), and a real-size
stage-2 resumable state (0.9B parameters, fp32 weights + AdamW moments) saves well within the stop grace.

Skipped without CUDA; the figures in docs/reliability.md come from this file on an H100.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from train_cli import TRAIN_LIMIT_S, assert_bit_identical, events, limit_for, run_train

pytestmark = [pytest.mark.gpu, pytest.mark.slow, limit_for(3 * TRAIN_LIMIT_S),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

OVERRIDES = ["init.from_checkpoint={checkpoints}/stage1", "training.max_steps=48",
             "checkpointing.resume_every_steps=6", "training.save_strategy=no"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_kill_and_resume_on_cuda_is_bit_identical(stage1_run, tiny_world, precision):
    overrides = OVERRIDES + (["training.bf16=true"] if precision == "bf16" else [])
    ref, again, killed = (f"gpu-{kind}-{precision}" for kind in ("ref", "again", "killed"))
    for name in (ref, again):
        assert run_train(tiny_world, "stage2", name, overrides).returncode == 0
    assert run_train(tiny_world, "stage2", killed, overrides, LLAVA_KIT_TEST_KILL_AT_STEP="17").returncode == -9
    resumed = run_train(tiny_world, "stage2", killed, overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e["step"] for e in events(tiny_world, killed) if e["event"] == "resume"] == [12]
    checkpoints = tiny_world / "checkpoints"
    assert_bit_identical(checkpoints / ref, checkpoints / again)  # the kernels themselves are deterministic here
    assert_bit_identical(checkpoints / ref, checkpoints / killed)


def real_size_model():
    import yaml
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from llava.bench.shapes import SHAPES_FILE  # the bench's real shapes, no weights
    shapes = yaml.safe_load(SHAPES_FILE.read_text())["real"]
    config = LlavaOnevisionConfig(text_config=shapes["text_config"],
                                  vision_config=dict(shapes["vision_config"], num_hidden_layers=26),
                                  image_token_index=151665, video_token_index=151666, vision_feature_layer=-1,
                                  vision_feature_select_strategy="full")
    torch.manual_seed(0)
    return config, LlavaOnevisionForConditionalGeneration(config).cuda()


def test_real_size_resumable_state_saves_within_the_grace(tmp_path):
    from transformers import LlavaOnevisionForConditionalGeneration

    from llava.durable import replace_folder, write_text
    from llava.train.checkpointing import MARKER, file_sizes, load_model_weights
    from llava.train.signals import stop_grace_seconds
    config, model = real_size_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for param in model.parameters():
        param.grad = torch.randn_like(param) * 1e-3
    optimizer.step()
    staged, final = tmp_path / ".staging" / "checkpoint-50", tmp_path / "checkpoint-50"
    staged.mkdir(parents=True)
    started = time.monotonic()
    model.save_pretrained(staged)
    torch.save(optimizer.state_dict(), staged / "optimizer.pt")
    replace_folder(staged, final, kind="resumable-state")
    write_text(final / MARKER, json.dumps({"step": 50, "files": file_sizes(final)}))
    saved_s = time.monotonic() - started
    fresh = LlavaOnevisionForConditionalGeneration(config).cuda()
    started = time.monotonic()
    load_model_weights(fresh, final)
    torch.optim.AdamW(fresh.parameters(), lr=1e-5).load_state_dict(
        torch.load(final / "optimizer.pt", map_location="cuda", weights_only=True))
    torch.cuda.synchronize()
    loaded_s = time.monotonic() - started
    size_gb = sum(file_sizes(final).values()) / 1e9
    print(f"\nreal-size resumable state: {size_gb:.1f} GB, saved in {saved_s:.1f} s, loaded in {loaded_s:.1f} s")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert size_gb > 10 and saved_s < stop_grace_seconds() / 2
