"""One forward pass for any batch the collator makes, with the original's loss.

Hand-written glue: the square (stage-1) path feeds projector features through `mm_encoder_outputs`
because transformers' pixel path always tiles; text-only batches run a zero-weighted dummy image
through the tower so every rank touches the same parameters (ZeRO-3 and DDP stay in step).
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def square_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Projector(vision layer features) for squash-resized tiles: (batch, tokens, hidden)."""
    core = unwrap(model).model
    config = unwrap(model).config
    hidden = core.vision_tower(pixels, output_hidden_states=True).hidden_states[config.vision_feature_layer]
    if config.vision_feature_select_strategy == "default":
        hidden = hidden[:, 1:]
    return core.multi_modal_projector(hidden)


def vision_keepalive(model: torch.nn.Module) -> torch.Tensor:
    """0 x (features of a blank tile): no effect on the loss, but tower and projector run.

    The newline is left out, as in the original: it is a bare parameter that ZeRO-3 only gathers
    inside the model's own forward.
    """
    config = unwrap(model).config
    side = config.vision_config.image_size
    dtype = unwrap(model).model.multi_modal_projector.linear_1.weight.dtype
    device = unwrap(model).model.multi_modal_projector.linear_1.weight.device
    blank = torch.zeros((1, 3, side, side), dtype=dtype, device=device)
    return square_features(model, blank).sum() * 0.0


def forward_batch(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, object]:
    batch = dict(batch)
    square = batch.pop("square_pixel_values", None)
    extra = None
    if square is not None:
        features = square_features(model, square)
        batch["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=list(features))}
    elif "pixel_values" not in batch:
        extra = vision_keepalive(model)
    outputs = model(**batch)
    supervised = (batch["labels"][:, 1:] != -100).any()
    loss = outputs.loss if supervised else outputs.logits.sum() * 0.0
    return (loss + extra if extra is not None else loss), outputs
