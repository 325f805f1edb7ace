"""`llava-kit bench` end to end through the CLI: every field of every stage, seed == fast losses, real shapes.

The runs are subprocesses (DeepSpeed and accelerate keep process-wide state), two at a time with one
thread each. On CPU: seed = ZeRO-3 with parameters and optimizer offloaded (DeepSpeedCPUAdam), padded
batches of one sample, the model's loss over every logit; fast = ZeRO-2, fused AdamW, four samples per
micro-batch, per-sample loss over supervised logits only. Same global batch, same data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

STAGES = ("stage1", "stage1_5", "stage2")
BENCH_LIMIT_S = 600  # one `llava-kit bench` run
# the module's 9 runs share 2 lanes: the longer lane waits out up to 5 limits before the first test runs
pytestmark = pytest.mark.timeout(5 * BENCH_LIMIT_S + 60)
STEPS = 4
# Stages 1.5/2 of the seed run one sample per micro-batch; the tiny recipes batch 8, so set it back.
SEED_LAYOUT = {"stage1": [], "stage1_5": ["training.per_device_batch=1", "training.grad_accum=8"],
               "stage2": ["training.per_device_batch=1", "training.grad_accum=8"]}
LOSS_REL_TOL = 1e-4


def bench(stage: str, *extra: str, size: str = "tiny", profile: str = "fast", steps: int = STEPS,
          sets: list[str] | None = None, timeout: int = BENCH_LIMIT_S) -> dict:
    args = [sys.executable, "-m", "llava.cli", "bench", stage, f"--size={size}", f"--profile={profile}",
            f"--steps={steps}", "--loader-seconds=0.3", "--json", *[f"--set={s}" for s in sets or []], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def packed_profile(tmp_path_factory) -> str:
    """`fast` on `torch_varlen`: packing really runs on CPU (fast's flash_attention_2 becomes padded sdpa here)."""
    from llava.profiles import PROFILES_DIR
    text = (PROFILES_DIR / "fast.yaml").read_text()
    line = "  model.attn_implementation: flash_attention_2"
    assert line in text
    path = tmp_path_factory.mktemp("profile") / "fast-packed.yaml"
    path.write_text(text.replace(line, "  model.attn_implementation: torch_varlen"))
    return str(path)


@pytest.fixture(scope="module")
def runs(packed_profile) -> dict:
    # The first seed run may build DeepSpeed's cpu_adam (once per machine): the other lane meanwhile
    # runs the fast and real-size jobs, then the remaining seeds.
    order = [("stage1", "seed"), *[(s, "fast") for s in STAGES], ("stage2", "packed"), "real",
             ("stage1_5", "seed"), ("stage2", "seed")]
    profiles = {"packed": packed_profile}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(bench, "stage2", size="real", steps=0) if key == "real" else
                   pool.submit(bench, key[0], profile=profiles.get(key[1], key[1]), sets=SEED_LAYOUT[key[0]])
                   for key in order}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("stage", STAGES)
def test_bench_reports_every_field(runs, stage):
    r = runs[(stage, "fast")]
    assert r["stage"] == stage and r["size"] == "tiny" and r["profile"] == "fast"
    assert r["device"].startswith("CPU") and r["peak_flops"] is None and r["mfu"] is None
    assert r["steps"] == STEPS and r["timed_steps"] == STEPS - 1
    assert r["samples"] == r["timed_steps"] * r["global_batch"] == (STEPS - 1) * 8
    assert r["seconds"] > 0 and r["samples_per_s"] > 0
    assert r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"], rel=1e-9)
    assert r["tokens"] == r["text_tokens"] + r["image_tokens"] and r["text_tokens"] > 0 and r["image_tokens"] > 0
    assert r["tokens_per_s"] == pytest.approx(r["tokens"] / r["seconds"], rel=1e-9)
    assert 0 <= r["padding_fraction"] < 1
    assert r["flops_per_sample"] > 0 and r["model_flops_per_s"] == pytest.approx(
        r["flops_per_sample"] * r["samples"] / r["seconds"], rel=1e-9)
    assert isinstance(r["peak_memory_bytes"], int) and 100e6 < r["peak_memory_bytes"] < 16e9
    assert r["peak_memory_kind"] == "max RSS (psutil)"
    loader = r["dataloader"]
    assert loader["images_per_s_per_core"] > 0 and loader["samples_per_s_per_core"] > 0
    assert r["loader_headroom"] == pytest.approx(loader["samples_per_s_per_core"] / r["samples_per_s"], rel=1e-9)
    assert len(r["losses"]) == STEPS and all(0 < x < 20 for x in r["losses"])
    assert r["date"] and r["parameters"]["total"] == sum(r["parameters"][k] for k in ("llm", "vision", "projector", "newline"))


def test_stage_shapes_show_in_the_numbers(runs):
    """Stage 1 squashes (one tile, 16 tokens at 56 px); 1.5 has long answers; stage 2 mixes in text-only."""
    s1, s15, s2 = (runs[(s, "fast")] for s in STAGES)
    assert set(s1["data"]["image_tokens_by_size"].values()) == {16}
    assert s1["data"]["text_only"] == 0 and s15["data"]["text_only"] == 0 and s2["data"]["text_only"] > 0
    assert s15["text_tokens"] / s15["samples"] > 4 * s1["text_tokens"] / s1["samples"]
    assert "anyres" in s2["dataloader"] and "anyres" not in s1["dataloader"]
    assert "torchvision" in s2["dataloader"]["anyres"]["torchvision_backend"]


@pytest.mark.parametrize("stage", STAGES)
def test_fast_and_seed_give_the_same_losses(runs, stage):
    seed, fast = runs[(stage, "seed")], runs[(stage, "fast")]
    assert (seed["zero_stage"], seed["optimizer_offload"], seed["optimizer_class"]) == (3, True, "DeepSpeedCPUAdam")
    assert (fast["zero_stage"], fast["optimizer_offload"], fast["optimizer_class"]) == (2, False, "AdamW")
    assert seed["global_batch"] == fast["global_batch"] == 8
    assert (seed["loss_impl"], fast["loss_impl_effective"]) == ("model", "selected")
    if stage != "stage1":  # one sample per micro-batch in the seed, four in fast
        assert (seed["per_device_batch"], fast["per_device_batch"]) == (1, 4)
        assert seed["padding_fraction"] == 0 < fast["padding_fraction"]
    assert seed["losses"] == pytest.approx(fast["losses"], rel=LOSS_REL_TOL)
    assert seed["losses"][0] != pytest.approx(seed["losses"][-1], rel=1e-3)  # the steps did train


def test_packed_fast_gives_the_seeds_losses(runs):
    """Stage 2 with 4-sample micro-batches packed into one row (torch_varlen) through DeepSpeed ZeRO-2."""
    seed, packed = runs[("stage2", "seed")], runs[("stage2", "packed")]
    assert (packed["attn_implementation"], packed["packing"], packed["per_device_batch"]) == ("torch_varlen", True, 4)
    assert runs[("stage2", "fast")]["packing"] is False  # sdpa: padded, so the two fast runs differ in layout
    assert packed["global_batch"] == seed["global_batch"]
    assert seed["losses"] == pytest.approx(packed["losses"], rel=LOSS_REL_TOL)


def test_real_shape_model_builds_with_089b_parameters(runs):
    r = runs["real"]
    assert r["parameters"]["total"] == pytest.approx(0.89e9, rel=0.02)
    assert r["parameters"]["llm"] == pytest.approx(494e6, rel=0.01)  # Qwen2.5-0.5B, tied head
    assert "samples_per_s" not in r and "losses" not in r  # --steps 0: no training at real size on CPU
    tokens = r["data"]["image_tokens_by_size"]  # the real anyres_max_9 math on 384-px tiles
    assert tokens.get("640x480", 2929) == 2929 and tokens.get("500x500", 3699) == 3699
    assert max(tokens.values()) <= 8765 and r["data"]["max_tokens"] <= 32768


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("stage", STAGES)
def test_fast_is_at_least_twice_the_seed_on_gpu(stage):
    per_gpu = ["training.keep_global_batch=false"]  # the seed's per-GPU step: 32 / 16 / 16 samples
    seed = bench(stage, size="real", profile="seed", steps=3, sets=per_gpu)
    fast = bench(stage, size="real", profile="fast", steps=3, sets=per_gpu)
    assert fast["global_batch"] == seed["global_batch"]
    assert fast["samples_per_s"] >= 2 * seed["samples_per_s"], (seed["samples_per_s"], fast["samples_per_s"])
