"""Random-weight LlavaOnevision models for benchmarking: real shapes (0.89B) or the tiny ones.

Shapes come from model_shapes.yaml (real) or llava.synthetic.tiny_models (tiny); the stage recipe
supplies the rest (vision layers kept, pinpoints, feature layer, attention). Nothing is downloaded and
no tokenizer is needed: samples are written as token ids (model_shapes.yaml `tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from llava.errors import KitError
from llava.recipe import Recipe
from llava.typed_config import read_packaged

SHAPES_FILE = Path(__file__).with_name("model_shapes.yaml")
SIZES = ("real", "tiny")
INIT_STD = 0.02  # Qwen2's and SigLIP's initializer_range


@dataclass(frozen=True)
class TokenIds:
    image: int
    video: int
    pad: int
    im_start: int
    im_end: int
    newline: int
    system: tuple[int, ...]
    user: tuple[int, ...]
    assistant: tuple[int, ...]
    text: tuple[int, int]

    @classmethod
    def from_data(cls, body: dict) -> "TokenIds":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})


@dataclass
class BenchModel:
    model: torch.nn.Module
    processor: object
    tokens: TokenIds
    size: str

    def parameter_counts(self) -> dict[str, int]:
        core = self.model.model
        parts = {"llm": core.language_model, "vision": core.vision_tower, "projector": core.multi_modal_projector}
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["newline"] = core.image_newline.numel()
        counts["total"] = sum(p.numel() for p in self.model.parameters())  # tied lm_head counted once
        return counts


def load_shapes(size: str) -> dict:
    if size not in SIZES:
        raise KitError(f"unknown bench size {size!r}: use one of {list(SIZES)}")
    body = read_packaged(SHAPES_FILE)[size]
    if size == "tiny":
        from llava.synthetic.tiny_models import TINY_TEXT, TINY_VISION
        body = {**body, "text_config": {"model_type": "qwen2", "vocab_size": body["vocab_size"],
                                        "tie_word_embeddings": True, **TINY_TEXT},
                "vision_config": {"model_type": "siglip_vision_model", **TINY_VISION}}
    return body


def bench_config(recipe: Recipe, shapes: dict):
    """The LlavaOnevision config llava.model.build would assemble, from shapes instead of folders."""
    from transformers import LlavaOnevisionConfig

    from llava.model.build import attn_implementation
    vision = {**shapes["vision_config"], "num_hidden_layers": recipe.model.vision_layers, "vision_use_head": False}
    if recipe.model.vision_layers > shapes["vision_config"]["num_hidden_layers"]:
        raise KitError(f"{recipe.source}: model.vision_layers {recipe.model.vision_layers} exceeds the tower's "
                       f"{shapes['vision_config']['num_hidden_layers']} layers")
    tokens = shapes["tokens"]
    config = LlavaOnevisionConfig(
        text_config=shapes["text_config"], vision_config=vision,
        image_token_index=tokens["image"], video_token_index=tokens["video"],
        vision_feature_layer=recipe.model.vision_feature_layer,
        vision_feature_select_strategy=recipe.model.vision_feature_select_strategy,
        vision_aspect_ratio=recipe.model.vision_aspect_ratio,
        image_grid_pinpoints=recipe.hf_grid_pinpoints or [[vision["image_size"]] * 2],
        projector_hidden_act=recipe.model.projector_hidden_act, multimodal_projector_bias=True,
        tie_word_embeddings=shapes["text_config"].get("tie_word_embeddings", True))
    config._attn_implementation = attn_implementation(recipe.model.attn_implementation)
    return config


def stand_in_tokenizer(tokens: TokenIds):
    """A word-level tokenizer holding only the media and pad tokens, at the real ids.

    The processor reads the image token's id from a tokenizer; image-token counts do not depend on it.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<|endoftext|>": tokens.pad, "<image>": tokens.image, "<video>": tokens.video}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|endoftext|>",
                                   additional_special_tokens=["<image>", "<video>"])


def randomize_(model: torch.nn.Module, seed: int, std: float = INIT_STD) -> None:
    """Normal(0, std) matrices, unit norm weights, zero biases, from one seeded generator.

    Hand-written: transformers' own init runs PyTorch's default init first and takes ~3x longer on
    0.9B parameters; a seeded generator also makes both profiles of a bench start from equal weights.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1 and "newline" not in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=generator)


def build_bench_model(recipe: Recipe, size: str, seed: int | None = None) -> BenchModel:
    from transformers import LlavaOnevisionForConditionalGeneration
    from transformers.initialization import no_init_weights

    from llava.data.processor import processor_for
    shapes = load_shapes(size)
    tokens = TokenIds.from_data(shapes["tokens"])
    config = bench_config(recipe, shapes)
    with no_init_weights():
        model = LlavaOnevisionForConditionalGeneration(config)
    model.tie_weights()
    randomize_(model, recipe.training.seed if seed is None else seed)
    processor = processor_for(model.config, stand_in_tokenizer(tokens))
    return BenchModel(model, processor, tokens, size)
