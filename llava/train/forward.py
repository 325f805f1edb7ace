"""One forward pass for any batch the collator makes, with the original's loss.

Hand-written glue: the square (stage-1) path feeds projector features through `mm_encoder_outputs`
because transformers' pixel path always tiles. Micro-batches without an image carry a blank-image row
from the collator (`placeholder_image_row`), so every rank runs the same modules in the same order.

Speed options (`ForwardOptions`, from the recipe's training.loss_impl / loss_average / packing) change
how the loss is computed, never its value beyond float rounding:
- `selected`: logits only at positions whose next token is supervised (a few hundred of several thousand
  in stages 1.5/2), instead of a (tokens x 151936) float tensor;
- `liger`: Liger's fused linear cross-entropy on those positions, where liger-kernel and CUDA exist;
- `per_sample`: mean over samples of each sample's token mean, the seed's loss at per_device_batch 1;
- `packing`: the micro-batch becomes one row, position_ids restart at each sample, and a varlen
  attention (flash-attn's, or PyTorch's as `torch_varlen`) keeps samples apart; the tests also run it
  through sdpa, whose block-diagonal mask transformers builds from the restarting position_ids.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutputWithPooling

IGNORE_INDEX = -100
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardOptions:
    loss_impl: str = "model"          # model | selected | liger
    loss_average: str = "micro_batch"  # micro_batch | per_sample
    packing: bool = False


VARLEN_ATTENTION = ("flash_attention_2", "torch_varlen")


def packs_varlen(model: torch.nn.Module) -> bool:
    """Packed rows stay apart without a dense mask only on a varlen attention."""
    return unwrap(model).config._attn_implementation in VARLEN_ATTENTION


def forward_options(recipe, model: torch.nn.Module) -> ForwardOptions:
    """The recipe's loss settings, with packing only where a varlen attention actually runs."""
    spec = recipe.training
    packing = spec.packing
    if packing and not packs_varlen(model):
        log.warning("training.packing needs a varlen attention (flash_attention_2 or torch_varlen); "
                    "using padded batches")
        packing = False
    return ForwardOptions(spec.loss_impl, spec.loss_average, packing)


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


def pack_rows(batch: dict) -> tuple[dict, torch.Tensor]:
    """Right-padded rows -> one row of their tokens, position_ids restarting per sample.

    Each sample's first label is masked: in one row the previous sample's last token would otherwise
    learn to predict it, a target the padded batch never has. Returns the batch and, per position,
    the index of the sample it belongs to.
    """
    mask = batch.pop("attention_mask").bool()
    labels = batch["labels"].clone()
    labels[:, 0] = IGNORE_INDEX
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    sample = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)
    packed = {**batch, "input_ids": batch["input_ids"][mask][None], "labels": labels[mask][None],
              "position_ids": positions[mask][None]}
    return packed, sample[mask][None]


def _supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (rows, tokens) mask of positions whose next token is supervised, and those targets."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep, labels[:, 1:][keep[:, :-1]]


def _average(token_loss: torch.Tensor, sample: torch.Tensor, per_sample: bool) -> torch.Tensor:
    if not per_sample:
        return token_loss.mean()
    ids, sample = torch.unique(sample, return_inverse=True)
    sums = torch.zeros(len(ids), dtype=token_loss.dtype, device=token_loss.device).index_add_(0, sample, token_loss)
    counts = torch.bincount(sample, minlength=len(ids)).to(token_loss.dtype)
    return (sums / counts).mean()


def _liger_usable(model: torch.nn.Module) -> bool:
    """Liger needs CUDA, the package, and an lm_head weight it can read whole (not ZeRO-3, not DDP)."""
    weight = unwrap(model).lm_head.weight
    return (weight.is_cuda and importlib.util.find_spec("liger_kernel") is not None
            and not hasattr(weight, "ds_id") and not isinstance(model, torch.nn.parallel.DistributedDataParallel))


def _liger_loss(model, batch: dict, keep, targets, sample, per_sample: bool) -> tuple[torch.Tensor, object]:
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    outputs = unwrap(model).model(**batch, use_cache=False)
    hidden = outputs.last_hidden_state[keep]
    weight = unwrap(model).lm_head.weight
    fused = LigerFusedLinearCrossEntropyLoss(reduction="mean")
    if not per_sample:
        return fused(weight, hidden, targets), outputs
    losses = [fused(weight, hidden[sample == s], targets[sample == s]) for s in torch.unique(sample)]
    return torch.stack(losses).mean(), outputs


def _selected_loss(model, batch: dict, options: ForwardOptions, sample: torch.Tensor) -> tuple[torch.Tensor, object]:
    labels = batch.pop("labels")
    keep, targets = _supervised_positions(labels)
    per_sample = options.loss_average == "per_sample"
    if not keep.any():
        outputs = model(**batch, logits_to_keep=1, use_cache=False)
        return outputs.logits.sum() * 0.0, outputs
    if options.loss_impl == "liger" and _liger_usable(model):
        return _liger_loss(model, batch, keep, targets, sample[keep], per_sample)
    outputs = model(**batch, logits_to_keep=keep, use_cache=False)
    token_loss = F.cross_entropy(outputs.logits.float(), targets, reduction="none")
    return _average(token_loss, sample[keep], per_sample), outputs


def forward_batch(model: torch.nn.Module, batch: dict,
                  options: ForwardOptions = ForwardOptions()) -> tuple[torch.Tensor, object]:
    batch = dict(batch)
    square = batch.pop("square_pixel_values", None)
    if square is not None:
        features = square_features(model, square)
        batch["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=list(features))}
    if options.packing:
        batch, sample = pack_rows(batch)
    else:
        sample = torch.arange(batch["labels"].shape[0], device=batch["labels"].device)[:, None].expand_as(batch["labels"])
    if options.loss_impl == "model":
        # A cache would hide the packed layout from transformers' mask builder (samples would see each other).
        outputs = model(**batch, use_cache=False) if options.packing else model(**batch)
        supervised = (batch["labels"][:, 1:] != IGNORE_INDEX).any()
        loss = outputs.loss if supervised else outputs.logits.sum() * 0.0
    else:
        loss, outputs = _selected_loss(model, batch, options, sample)
    return loss, outputs
