"""The fast loss paths equal the seed's loss and gradients on one batch (tiny model, CPU, fp32).

Packing runs here through transformers' sdpa path, which builds a block-diagonal mask from restarting
position_ids; on GPU the same rows go to flash-attn varlen.
"""

from __future__ import annotations

from functools import partial

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

@pytest.fixture(scope="module")
def varlen_twin(tiny):
    """The same weights on `torch_varlen` attention (PyTorch's varlen kernel on CUDA, per-segment SDPA here)."""
    bench, model = tiny
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", ["model.attn_implementation=torch_varlen"])
    twin = build_bench_model(recipe, "tiny").model.train()
    twin.load_state_dict(model.state_dict())
    assert twin.config.text_config._attn_implementation == "torch_varlen"
    return twin


@pytest.mark.parametrize("options", [ForwardOptions("selected", "per_sample", packing=True),
                                     ForwardOptions("model", packing=True), SEED])
def test_torch_varlen_equals_padded_sdpa(tiny, varlen_twin, items, options):
    """Packed rows on torch_varlen give the padded SDPA batch's loss and gradients (padded: SDPA's mask)."""
    _, model = tiny
    reference = ForwardOptions(options.loss_impl, options.loss_average, packing=False)
    loss, grads = loss_and_grads(model, items, reference)
    fast_loss, fast_grads = loss_and_grads(varlen_twin, items, options)
    assert fast_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert torch.allclose(fast_grads, grads, atol=1e-6, rtol=1e-4)


def test_varlen_segments_and_mask():
    """Segments start at every position id 0 and every row; a mask is built only where something is padded."""
    from transformers.masking_utils import causal_mask_function

    from llava.model.varlen_attention import segment_bounds, varlen_mask
    packed = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert segment_bounds(packed, 1, 9, torch.device("cpu")).tolist() == [0, 3, 5, 9]
    assert segment_bounds(None, 3, 4, torch.device("cpu")).tolist() == [0, 4, 8, 12]
    full, padded = torch.ones(2, 5, dtype=torch.long), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    common = {"batch_size": 2, "q_length": 5, "kv_length": 5, "mask_function": causal_mask_function}
    assert varlen_mask(**common, attention_mask=full) is None and varlen_mask(**common, attention_mask=None) is None
    mask = varlen_mask(**common, attention_mask=padded.bool())
    assert mask.shape == (2, 1, 5, 5) and not mask[1, 0, 4, 3] and mask[1, 0, 2, 1] and not mask[0, 0, 1, 2]
    continuation = varlen_mask(**{**common, "q_length": 2, "q_offset": 3}, attention_mask=full.bool())
    assert continuation.shape == (2, 1, 2, 5) and continuation[0, 0, 0, 3] and not continuation[0, 0, 0, 4]


def test_packing_runs_on_torch_varlen(varlen_twin):
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", ["training.packing=true", "training.loss_impl=selected"])
    assert forward_options(recipe, varlen_twin) == ForwardOptions("selected", "micro_batch", True)


def test_varlen_kernel_call_fits_the_installed_torch():
    """The kernel call, traced with fake CUDA tensors (no GPU needed): this torch accepts its keywords and
    returns (tokens, query heads, dim) for GQA inputs. The numbers are checked by the gpu test below."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from llava.model.varlen_attention import _flash_segments
    with FakeTensorMode(allow_non_fake_inputs=True):
        q = torch.empty(3000, 14, 64, dtype=torch.bfloat16, device="cuda")
        k, v = (torch.empty(3000, 2, 64, dtype=torch.bfloat16, device="cuda") for _ in range(2))
        bounds = torch.empty(3, dtype=torch.int32, device="cuda")
        out = _flash_segments(q, k, v, bounds, longest=2000, causal=True, scaling=0.125)
        assert (tuple(out.shape), out.dtype, out.device.type) == ((3000, 14, 64), torch.bfloat16, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_varlen_kernel_matches_sdpa_segments_in_bf16():
    """PyTorch's varlen flash kernel against per-segment SDPA, GQA and causal, forward and backward."""
    from llava.model.varlen_attention import _flash_segments, _sdpa_segments, kernel_available, segment_bounds
    assert kernel_available()
    generator = torch.Generator("cuda").manual_seed(0)
    positions = torch.cat([torch.arange(n) for n in (700, 1300, 35, 2000)])[None].cuda()
    bounds = segment_bounds(positions, 1, positions.shape[1], positions.device)
    q, k, v = (torch.randn(positions.shape[1], heads, 64, device="cuda", generator=generator, dtype=torch.bfloat16)
               .requires_grad_() for heads in (14, 2, 2))
    results = []
    for attend in (partial(_flash_segments, longest=2000), _sdpa_segments):
        out = attend(q, k, v, bounds, causal=True, scaling=0.125)
        grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
        results.append((out.float(), [g.float() for g in grads]))
    (out, grads), (ref, ref_grads) = results
    assert (out - ref).abs().max() < 2e-2
    assert all((g - r).norm() / r.norm() < 2e-2 for g, r in zip(grads, ref_grads))


def test_torch_varlen_generates_what_sdpa_generates(tiny, varlen_twin):
    """Prefill through varlen, cached decoding through SDPA: the same greedy tokens and logits."""
    _, model = tiny
    prompt = torch.tensor([[21, 57, 300, 44, 12, 99, 7]])
    outs = [m.eval().generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                              do_sample=False, output_logits=True, return_dict_in_generate=True)
            for m in (model, varlen_twin)]
    model.train(), varlen_twin.train()
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outs[0].logits, outs[1].logits))
