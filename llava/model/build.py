"""Assemble transformers' LlavaOnevisionForConditionalGeneration for a recipe.

From an LLM folder + a SigLIP folder (stage 1) or from the previous stage's checkpoint, with the
settings that make the HF classes reproduce the original (recipe-semantics §7).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlavaOnevisionConfig,
                          LlavaOnevisionForConditionalGeneration, SiglipVisionModel)

from llava.data.processor import (ImageOnlyOnevisionProcessor, add_media_tokens, load_processor, processor_for,
                                  require_dir, vision_tower_config)
from llava.errors import KitError
from llava.model import varlen_attention
from llava.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: LlavaOnevisionForConditionalGeneration
    tokenizer: object
    processor: ImageOnlyOnevisionProcessor


def attn_implementation(requested: str) -> str:
    """The attention that can run here for the one the recipe asks for.

    flash_attention_2 needs the flash-attn package and a GPU; without the package, PyTorch's own varlen
    flash kernel (`torch_varlen`) keeps packing on a GPU; without a GPU, SDPA.
    """
    if requested == varlen_attention.NAME:
        return varlen_attention.register()
    if requested != "flash_attention_2":
        return requested
    if not torch.cuda.is_available():
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is not None:
        return requested
    if varlen_attention.kernel_available():
        log.info("flash-attn is not installed: using PyTorch's varlen flash kernel (%s)", varlen_attention.NAME)
        return varlen_attention.register()
    log.warning("flash_attention_2 requested but neither flash-attn nor torch's varlen kernel is here: using sdpa")
    return "sdpa"


def assemble_from_parts(recipe: Recipe, llm_dir: Path, vision_dir: Path) -> BuiltModel:
    torch.manual_seed(recipe.training.seed)  # every fresh tensor below (resized rows, newline) is seeded
    tokenizer = AutoTokenizer.from_pretrained(require_dir(llm_dir, "LLM"))
    add_media_tokens(tokenizer)
    llm = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
    vision_config = vision_tower_config(require_dir(vision_dir, "vision tower"), recipe.model.vision_layers)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    expected = recipe.model.image_token_index
    if expected is not None and expected != image_id:
        raise KitError(f"{recipe.source}: model.image_token_index is {expected} but the tokenizer gives <image> id {image_id}")
    if image_id >= llm.config.vocab_size:
        llm.resize_token_embeddings(len(tokenizer))
    config = LlavaOnevisionConfig(
        text_config=llm.config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_token_index=image_id,
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=recipe.model.vision_feature_layer,
        vision_feature_select_strategy=recipe.model.vision_feature_select_strategy,
        vision_aspect_ratio=recipe.model.vision_aspect_ratio,
        image_grid_pinpoints=recipe.hf_grid_pinpoints or [[vision_config.image_size] * 2],
        projector_hidden_act=recipe.model.projector_hidden_act,
        multimodal_projector_bias=True,
        tie_word_embeddings=llm.config.tie_word_embeddings,
    )
    config._attn_implementation = attn_implementation(recipe.model.attn_implementation)
    model = LlavaOnevisionForConditionalGeneration(config)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
    vision = SiglipVisionModel.from_pretrained(vision_dir, config=vision_config, dtype=torch.float32)
    model.model.vision_tower.load_state_dict(vision.state_dict())
    model.tie_weights()
    return BuiltModel(model, tokenizer, processor_for(model.config, tokenizer))


def continue_from_checkpoint(recipe: Recipe, folder: Path) -> BuiltModel:
    """The previous stage's model; this stage's image settings replace the stored ones."""
    require_dir(folder, "previous-stage checkpoint")
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation=attn_implementation(recipe.model.attn_implementation))
    tokenizer = load_processor(folder).tokenizer
    config = model.config
    config.image_grid_pinpoints = recipe.hf_grid_pinpoints or [[config.vision_config.image_size] * 2]
    config.vision_aspect_ratio = recipe.model.vision_aspect_ratio
    if recipe.init.reset_image_newline:
        generator = torch.Generator().manual_seed(recipe.training.seed)
        hidden = config.text_config.hidden_size
        with torch.no_grad():
            model.model.image_newline.copy_(torch.randn(hidden, generator=generator) / math.sqrt(hidden))
    return BuiltModel(model, tokenizer, processor_for(config, tokenizer))


def build_model(recipe: Recipe, layout) -> BuiltModel:
    if recipe.init.from_checkpoint:
        return continue_from_checkpoint(recipe, layout.resolve(recipe.init.from_checkpoint))
    return assemble_from_parts(recipe, layout.resolve(recipe.init.llm), layout.resolve(recipe.init.vision_tower))
