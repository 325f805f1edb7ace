"""The fast loss paths equal the seed's loss and gradients on one batch (tiny model, CPU, fp32).

Packing runs here through transformers' sdpa path, which builds a block-diagonal mask from restarting
position_ids; on GPU the same rows go to flash-attn varlen.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llava.bench.shapes import build_bench_model
from llava.data.collator import Collator, placeholder_image_row
from llava.data.images import AnyresImages
from llava.recipe import STAGES_DIR, load_recipe
from llava.train.forward import IGNORE_INDEX, ForwardOptions, forward_batch, forward_options, pack_rows

SEED = ForwardOptions()
SIZES = [(93, 70), (70, 93), None, (120, 60), (56, 56)]  # None: a text-only sample


@pytest.fixture(scope="module")
def tiny():
    bench = build_bench_model(load_recipe(STAGES_DIR / "smoke" / "stage2.yaml"), "tiny")
    return bench, bench.model.train()


@pytest.fixture(scope="module")
def items(tiny):
    bench, _ = tiny
    pipeline, image_id = AnyresImages(bench.processor), bench.tokens.image
    generator = torch.Generator().manual_seed(0)
    out = []
    for k, size in enumerate(SIZES):
        ids = torch.randint(16, 512, (18 + 9 * k,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * 6 + ids[6:]
        item = {}
        if size:
            processed = pipeline.process(Image.new("RGB", size, (40 * k, 120, 30)))
            ids = [ids[0], *[image_id] * processed.num_tokens, *ids[1:]]
            labels = [IGNORE_INDEX] * (1 + processed.num_tokens) + labels[1:]
            item = {"pixel_values": processed.pixel_values, "image_size": processed.image_size}
        out.append({**item, "input_ids": ids, "labels": labels})
    return out


def loss_and_grads(model, items, options):
    model.zero_grad()
    loss, _ = forward_batch(model, Collator(0, "pixel_values")(items), options)
    loss.backward()
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])
    return loss.detach(), grads


def seed_per_sample(model, items):
    """The seed at per_device_batch 1: each micro-batch one sample, averaged over accumulation."""
    results = [loss_and_grads(model, [item], SEED) for item in items]
    return sum(r[0] for r in results) / len(items), sum(r[1] for r in results) / len(items)


@pytest.mark.parametrize("options", [ForwardOptions("selected"), ForwardOptions("model", packing=True),
                                     ForwardOptions("selected", packing=True)])
def test_micro_batch_token_mean_is_kept(tiny, items, options):
    _, model = tiny
    loss, grads = loss_and_grads(model, items, SEED)
    fast_loss, fast_grads = loss_and_grads(model, items, options)
    assert fast_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(fast_grads, grads, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("packing", [False, True])
def test_per_sample_average_equals_seed_at_batch_one(tiny, items, packing):
    _, model = tiny
    loss, grads = seed_per_sample(model, items)
    fast_loss, fast_grads = loss_and_grads(model, items, ForwardOptions("selected", "per_sample", packing))
    assert fast_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(fast_grads, grads, atol=1e-6, rtol=1e-4)
    micro_batch, _ = loss_and_grads(model, items, SEED)  # and it is a different number from the token mean
    assert micro_batch.item() != pytest.approx(loss.item(), rel=1e-5)


def test_pack_rows_layout(tiny, items):
    """One row, positions restarting per sample, and no target across a sample boundary."""
    batch = Collator(0, "pixel_values")(items[:3])
    lengths = batch["attention_mask"].sum(1).tolist()
    packed, sample = pack_rows(dict(batch))
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    starts = [sum(lengths[:k]) for k in range(3)]
    assert [packed["position_ids"][0, s].item() for s in starts] == [0, 0, 0]
    assert all(packed["labels"][0, s].item() == IGNORE_INDEX for s in starts)
    assert sample[0].tolist() == sum(([k] * n for k, n in enumerate(lengths)), [])


def test_packing_only_where_flash_attention_runs(tiny):
    bench, model = tiny
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", ["training.packing=true", "training.loss_impl=selected"])
    assert model.config._attn_implementation == "sdpa"
    assert forward_options(recipe, model) == ForwardOptions("selected", "micro_batch", False)


def test_text_only_batch_keeps_the_tower_in_the_graph(tiny, items):
    """The collator's blank-image row runs the vision path without changing the loss."""
    bench, model = tiny
    options = ForwardOptions("selected", "per_sample", True)
    row = placeholder_image_row(AnyresImages(bench.processor), bench.tokens.image)
    model.zero_grad()
    loss, _ = forward_batch(model, Collator(0, "pixel_values", placeholder=row)([items[2], items[2]]), options)
    loss.backward()
    vision = model.model.vision_tower.embeddings.patch_embedding.weight
    assert vision.grad is not None and torch.count_nonzero(vision.grad) == 0  # touched, zero-weighted
    plain, _ = loss_and_grads(model, [items[2], items[2]], options)
    assert loss.item() > 0 and torch.allclose(loss.detach(), plain, rtol=1e-5)