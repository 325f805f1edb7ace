"""Image-token counts per stage (recipe-semantics §3.4) from the processor and from the model itself."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llava.data.images import AnyresImages, SquareImages
from llava.data.processor import build_processor
from llava.recipe import load_recipe

SIZES = [(640, 480), (480, 640), (1024, 1024), (384, 384), (2000, 300), (300, 2000)]
EXPECTED = {  # W x H -> tokens, the verified reference table
    "stage1": [729, 729, 729, 729, 729, 729],
    "stage1_5": [2929, 2943, 3699, 1513, 1795, 1863],
    "stage2": [2929, 2943, 7371, 1485, 4804, 4941],
}
MAX_TOKENS = {"stage1": 729, "stage1_5": 3699, "stage2": 8765}


def stage_images(stage: str, tokenizer):
    recipe = load_recipe(stage)
    processor = build_processor(tokenizer, 384, recipe.hf_grid_pinpoints or [[384, 384]], 729,
                                recipe.model.vision_aspect_ratio, "full")
    pipeline = {"square": SquareImages, "anyres": AnyresImages}[recipe.model.image_mode](processor)
    return recipe, processor, pipeline


@pytest.fixture(scope="module")
def tiny_384_model(tiny_tokenizer):
    """Real tile geometry (384 px, patch 14), toy widths: feature counts are exact, compute is tiny."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "intermediate_size": 32, "vocab_size": 640},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 8, "intermediate_size": 16,
                       "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 384, "patch_size": 14},
        image_token_index=tiny_tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")
    return LlavaOnevisionForConditionalGeneration(config).eval()


@pytest.mark.parametrize("stage", list(EXPECTED))
def test_processor_counts_match_reference(stage, tiny_tokenizer):
    _, _, pipeline = stage_images(stage, tiny_tokenizer)
    counts = [pipeline.process(Image.new("RGB", size, (90, 120, 30))).num_tokens for size in SIZES]
    assert counts == EXPECTED[stage]


@pytest.mark.parametrize("stage", list(EXPECTED))
def test_model_feature_count_equals_processor_count(stage, tiny_tokenizer, tiny_384_model):
    from llava.train.forward import square_features
    recipe, _, pipeline = stage_images(stage, tiny_tokenizer)
    model = tiny_384_model
    model.config.image_grid_pinpoints = recipe.hf_grid_pinpoints or [[384, 384]]
    for size, expected in zip(SIZES, EXPECTED[stage]):
        item = pipeline.process(Image.new("RGB", size, (10, 200, 90)))
        with torch.no_grad():
            if recipe.model.image_mode == "square":
                features = square_features(model, item.pixel_values[None])[0]
            else:
                out = model.model.get_image_features(item.pixel_values[None], torch.tensor([item.image_size]),
                                                     vision_feature_layer=-1, vision_feature_select_strategy="full",
                                                     return_dict=True)
                features = out.pooler_output[0]
        assert features.shape[0] == item.num_tokens == expected, size


@pytest.mark.parametrize("stage", list(MAX_TOKENS))
def test_largest_image_token_count_per_stage(stage, tiny_tokenizer):
    _, _, pipeline = stage_images(stage, tiny_tokenizer)
    assert pipeline.max_tokens() == MAX_TOKENS[stage]


def test_square_pixels_equal_anyres_base_tile(tiny_tokenizer):
    _, processor, _ = stage_images("stage2", tiny_tokenizer)
    image = Image.effect_mandelbrot((500, 333), (-2, -1.2, 1, 1.2), 60).convert("RGB")
    base_tile = AnyresImages(processor).process(image).pixel_values[0]
    square = SquareImages(processor).process(image).pixel_values
    assert torch.allclose(square, base_tile, atol=1e-6)


# ---------------------------------------------------------------- multi-image samples (pad mode)

TWO_IMAGES = [(640, 480), (300, 2000)]


def _pictures(sizes=TWO_IMAGES):
    return [Image.effect_mandelbrot(size, (-2, -1.2, 1, 1.2), 40).convert("RGB") for size in sizes]


def test_two_image_sample_is_730_plus_730_tokens_as_transformers_packs_it(tiny_tokenizer, tiny_384_model):
    """Stage 2 at real size: each image padded to a square, one 384-px tile, 729 features + image_newline."""
    from llava.data.images import process_sample_images

    recipe, processor, pipeline = stage_images("stage2", tiny_tokenizer)
    pictures = _pictures()
    processed = process_sample_images(pipeline, pictures)
    assert [p.num_tokens for p in processed] == [730, 730]
    assert [p.image_size for p in processed] == [(480, 640), (2000, 300)]
    # transformers' own processor, given the sample's images as one nested list, expands the same counts
    reference = processor(images=[pictures], text="<image>\n<image>\nWhich is wider?", return_tensors="pt")
    assert int((reference["input_ids"] == processor.image_token_id).sum()) == 1460
    assert torch.equal(torch.stack([p.pixel_values for p in processed]), reference["pixel_values"])
    # and the model turns those pixel rows into exactly 730 + 730 features
    model = tiny_384_model
    model.config.image_grid_pinpoints = recipe.hf_grid_pinpoints
    with torch.no_grad():
        out = model.model.get_image_features(reference["pixel_values"], reference["image_sizes"],
                                             vision_feature_layer=-1, vision_feature_select_strategy="full",
                                             batch_num_images=torch.tensor([2]), return_dict=True)
    assert [f.shape[0] for f in out.pooler_output] == [730, 730]


def test_square_path_pads_each_image_with_the_mean_colour(tiny_tokenizer):
    """Stage 1's flat merge adds no newline: 729 per image; the padded border is the mean colour (0 after norm)."""
    from llava.data.images import process_sample_images

    _, _, pipeline = stage_images("stage1", tiny_tokenizer)
    wide, tall = process_sample_images(pipeline, _pictures())
    assert (wide.num_tokens, tall.num_tokens) == (729, 729)
    background = (int(0.5 * 255) / 255 - 0.5) / 0.5
    assert torch.allclose(wide.pixel_values[:, :5, :], torch.full((3, 5, 384), background), atol=1e-6)  # top band
    assert torch.allclose(tall.pixel_values[:, :, :5], torch.full((3, 384, 5), background), atol=1e-6)  # left band
    single = process_sample_images(pipeline, _pictures()[:1])[0]
    assert not torch.allclose(single.pixel_values[:, :5, :], torch.full((3, 5, 384), background), atol=1e-3)
