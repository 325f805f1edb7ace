"""Model FLOPs of one training step and MFU; the formula is written out in docs/performance.md.

Dense parts cost 2 FLOPs per parameter per token forward. Backward costs 4 more when the part's
weights train (6·N·tokens), 2 more when they are frozen but an earlier part trains (gradients must
pass through: 4·N), nothing when no trainable part comes before (2·N: the stage-1 vision tower).
Attention adds 2·S²·d per layer forward for a causal sequence of S tokens (the LLM: QKᵀ and AV, half
the square) and 4·P²·d for a bidirectional one (each 729-patch SigLIP tile); its backward is twice
that wherever gradients flow. The lm_head counts only supervised positions, the work the loss needs.
Recomputation for gradient checkpointing is not counted (model FLOPs, not hardware FLOPs).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from pathlib import Path

import torch

from llava.typed_config import read_packaged

DEVICES_FILE = Path(__file__).with_name("devices.yaml")


@dataclass(frozen=True)
class BatchCounts:
    """What one micro-batch fed the model, summed over its samples."""
    samples: int = 0
    text_tokens: int = 0
    image_tokens: int = 0
    squared_lengths: int = 0     # Σ S_i² over samples (attention)
    supervised: int = 0          # positions whose next token is a target
    tiles: int = 0               # SigLIP tiles run (anyres base + grid tiles, or 1 square tile)
    padded_positions: int = 0    # positions the model computed that were padding

    def __add__(self, other: "BatchCounts") -> "BatchCounts":
        return BatchCounts(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def tokens(self) -> int:
        return self.text_tokens + self.image_tokens


def _matmul_params(module: torch.nn.Module) -> int:
    """Parameters of the module's Linear/Conv weights: the ones that cost 2 FLOPs per token."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))


@dataclass(frozen=True)
class FlopModel:
    llm_dense: int
    llm_layers: int
    llm_width: int
    lm_head: int
    vision_dense: int
    vision_layers: int
    vision_width: int
    tile_tokens: int
    projector: int
    trains: frozenset

    @classmethod
    def from_model(cls, model: torch.nn.Module, tunable_parts: list[str]) -> "FlopModel":
        core, config = model.model, model.config
        text, vision = config.text_config, config.vision_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return cls(
            llm_dense=_matmul_params(core.language_model.layers), llm_layers=text.num_hidden_layers,
            llm_width=text.num_attention_heads * head_dim, lm_head=model.lm_head.weight.numel(),
            vision_dense=_matmul_params(core.vision_tower), vision_layers=vision.num_hidden_layers,
            vision_width=vision.hidden_size, tile_tokens=(vision.image_size // vision.patch_size) ** 2,
            projector=_matmul_params(core.multi_modal_projector), trains=frozenset(tunable_parts))

    def _factor(self, part: str, before: tuple[str, ...]) -> int:
        if part in self.trains:
            return 6
        return 4 if any(p in self.trains for p in before) else 2

    def flops(self, counts: BatchCounts) -> float:
        vision = self._factor("mm_vision_tower", ())
        projector = self._factor("mm_mlp_adapter", ("mm_vision_tower",))
        llm = self._factor("mm_language_model", ("mm_vision_tower", "mm_mlp_adapter"))
        patches = counts.tiles * self.tile_tokens
        total = vision * self.vision_dense * patches + projector * self.projector * patches
        total += (3 if vision == 6 else 1) * 4 * self.tile_tokens ** 2 * self.vision_width * self.vision_layers * counts.tiles
        total += llm * self.llm_dense * counts.tokens + llm * self.lm_head * counts.supervised
        total += (3 if llm > 2 else 1) * 2 * counts.squared_lengths * self.llm_width * self.llm_layers
        return float(total)


def peak_for_name(name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU by its CUDA name (devices.yaml), None when not listed."""
    for entry in read_packaged(DEVICES_FILE):
        if entry["pattern"] in name:
            return float(entry["peak_bf16"])
    return None


def device_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, peak bf16 FLOP/s or None): from devices.yaml for GPUs; None on CPU."""
    if device.type != "cuda":
        import platform
        return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)", None
    name = torch.cuda.get_device_name(device)
    return name, peak_for_name(name)
