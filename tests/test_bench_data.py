"""Synthetic stage data follows stage_data.yaml and the original label rule; the FLOP formula's numbers."""

from __future__ import annotations

import statistics

import pytest
import torch

from llava.bench.flops import BatchCounts, FlopModel, device_peak, peak_for_name
from llava.bench.runner import build_data
from llava.bench.samples import draw_specs
from llava.bench.shapes import bench_config, build_bench_model, load_shapes
from llava.data.templates import IGNORE_INDEX
from llava.recipe import STAGES_DIR, load_recipe


def test_stage_mixtures():
    s1, s15, s2 = (draw_specs(stage, 2000, seed=0) for stage in ("stage1", "stage1_5", "stage2"))
    assert all(len(s.turns) == 1 and s.image for s in s1 + s15)
    assert statistics.median(s.turns[0][1] for s in s1) == pytest.approx(12, abs=2)      # short BLIP captions
    assert statistics.median(s.turns[0][1] for s in s15) == pytest.approx(180, rel=0.1)  # long descriptions
    assert sum(s.image == (640, 480) for s in s15) / 2000 == pytest.approx(0.55, abs=0.05)
    text_only = sum(s.image is None for s in s2) / 2000
    assert text_only == pytest.approx(0.07, abs=0.02)
    assert sum(len(s.turns) > 1 for s in s2) / 2000 > 0.5
    assert draw_specs("stage2", 50, seed=3) == draw_specs("stage2", 50, seed=3) != draw_specs("stage2", 50, seed=4)
    tiny = draw_specs("stage1_5", 50, seed=0, tile=56)
    assert max(max(s.image) for s in tiny) <= round(640 * 56 / 384)


@pytest.fixture(scope="module")
def stage2_tiny():
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", ["data.label_mode=original"])
    bench = build_bench_model(recipe, "tiny")
    return bench, build_data(recipe, bench, 40)


def test_items_follow_the_original_label_rule(stage2_tiny):
    bench, data = stage2_tiny
    t = bench.tokens
    structural = {t.im_start, t.im_end, t.newline}
    index = next(i for i, s in enumerate(data.specs) if s.image and len(s.turns) > 1)
    item = data[index]
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == data.sample_tokens(data.specs[index]) <= 1024
    assert ids.count(t.image) == data.image_tokens(data.specs[index].image) > 0
    assert all(lab == IGNORE_INDEX for tok, lab in zip(ids, labels) if tok == t.image)
    # split into ChatML turns at <|im_start|>; the role follows it
    starts = [k for k, tok in enumerate(ids) if tok == t.im_start] + [len(ids)]
    roles = []
    for a, b in zip(starts, starts[1:]):
        turn, turn_labels = ids[a:b], labels[a:b]
        assistant = tuple(turn[1:1 + len(t.assistant)]) == t.assistant
        roles.append("assistant" if assistant else "other")
        if assistant:
            assert turn_labels == turn
        else:
            assert turn_labels == [tok if tok in structural else IGNORE_INDEX for tok in turn]
    assert roles[0] == "other" and roles.count("assistant") == len(data.specs[index].turns) >= 2
    assert "pixel_values" not in data[next(i for i, s in enumerate(data.specs) if s.image is None)]


def test_samples_fit_the_length_budget():
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", ["training.model_max_length=300"])
    bench = build_bench_model(recipe, "tiny")
    data = build_data(recipe, bench, 60)
    assert max(data.sample_tokens(s) for s in data.specs) <= 300
    assert any(s.component == "sharegpt_text" for s in data.specs)


# Matmul parameters from the published shapes, by hand:
# Qwen2.5-0.5B layer: q,o 896x896; k,v 896x128; gate,up,down 896x4864 -> 14,909,440; x24
# SigLIP-so400m layer: q,k,v,o 1152x1152; fc1,fc2 1152x4304 -> 15,224,832; x26, + patch conv 3x14x14x1152
LLM_DENSE, LM_HEAD = 24 * 14_909_440, 896 * 151_936
VISION_DENSE, PROJECTOR = 26 * 15_224_832 + 3 * 14 * 14 * 1152, 1152 * 896 + 896 * 896


@pytest.fixture(scope="module")
def real_flop_models():
    from transformers import LlavaOnevisionForConditionalGeneration
    out = {}
    for stage in ("stage1", "stage2"):
        recipe = load_recipe(stage)
        with torch.device("meta"):
            model = LlavaOnevisionForConditionalGeneration(bench_config(recipe, load_shapes("real")))
        out[stage] = FlopModel.from_model(model, recipe.tunable_parts)
    return out


def test_flop_model_counts_the_real_shapes(real_flop_models):
    m = real_flop_models["stage2"]
    assert (m.llm_dense, m.lm_head, m.vision_dense, m.projector) == (LLM_DENSE, LM_HEAD, VISION_DENSE, PROJECTOR)
    assert (m.llm_layers, m.llm_width, m.vision_layers, m.vision_width, m.tile_tokens) == (24, 896, 26, 1152, 729)


def test_stage2_sample_flops(real_flop_models):
    """A 640x480 COCO question: 5 tiles, 2929 image + 200 text tokens, 150 targets; everything trains."""
    counts = BatchCounts(samples=1, text_tokens=200, image_tokens=2929, squared_lengths=3129 ** 2,
                         supervised=150, tiles=5)
    patches = 5 * 729
    expected = (6 * VISION_DENSE * patches + 6 * PROJECTOR * patches + 3 * 4 * 729 ** 2 * 1152 * 26 * 5
                + 6 * LLM_DENSE * 3129 + 6 * LM_HEAD * 150 + 3 * 2 * 3129 ** 2 * 896 * 24)
    assert real_flop_models["stage2"].flops(counts) == pytest.approx(expected, rel=1e-12)
    assert 15e12 < expected < 25e12


def test_stage1_frozen_parts_cost_less(real_flop_models):
    """Projector-only training: tower forward only, LLM forward + input gradients (no weight gradients)."""
    counts = BatchCounts(samples=1, text_tokens=14, image_tokens=729, squared_lengths=743 ** 2, supervised=13, tiles=1)
    expected = (2 * VISION_DENSE * 729 + 6 * PROJECTOR * 729 + 4 * 729 ** 2 * 1152 * 26
                + 4 * LLM_DENSE * 743 + 4 * LM_HEAD * 13 + 3 * 2 * 743 ** 2 * 896 * 24)
    assert real_flop_models["stage1"].flops(counts) == pytest.approx(expected, rel=1e-12)


def test_peak_flops_are_data():
    assert device_peak(torch.device("cpu"))[1] is None
    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989e12 and peak_for_name("NVIDIA H200") == 989e12
    assert peak_for_name("NVIDIA GeForce RTX 4090") == 165e12 and peak_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_for_name("NVIDIA H100 PCIe") == 756e12 and peak_for_name("Tesla T4") is None
