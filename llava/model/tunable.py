"""Which parameters train, and at which learning rate — LLaVA-NeXT's `mm_tunable_parts` by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A parameter belongs to a part by the substrings of its name, as in the original.
PART_MATCHERS = {
    "mm_mlp_adapter": lambda name: "multi_modal_projector" in name,
    "mm_vision_tower": lambda name: "vision_tower" in name,
    "mm_language_model": lambda name: "vision_tower" not in name and "multi_modal_projector" not in name,
}


@dataclass(frozen=True)
class TunableParts:
    parts: tuple[str, ...]

    def trains(self, name: str) -> bool:
        return any(PART_MATCHERS[part](name) for part in self.parts)

    def apply(self, model: torch.nn.Module) -> dict[str, int]:
        """Freeze everything, then unfreeze the named parts. Returns trainable/frozen counts."""
        counts = {"trainable": 0, "frozen": 0}
        for name, param in model.named_parameters():
            param.requires_grad_(self.trains(name))
            counts["trainable" if param.requires_grad else "frozen"] += param.numel()
        return counts


def _no_decay(model: torch.nn.Module) -> set[str]:
    """The original's rule: biases and LayerNorm weights skip decay (Qwen's RMSNorm does not)."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, torch.nn.LayerNorm) or "bias" in param_name:
                names.add(full)
    return names


def optimizer_groups(model: torch.nn.Module, lr: float, weight_decay: float,
                     vision_tower_lr: float | None) -> list[dict]:
    """Up to four groups: (vision tower | rest) x (decay | no decay); the tower gets its own lr."""
    no_decay = _no_decay(model)
    buckets: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_vision = vision_tower_lr is not None and "vision_tower" in name
        buckets.setdefault((is_vision, name in no_decay), []).append(param)
    groups = []
    for (is_vision, skip_decay), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "lr": vision_tower_lr if is_vision else lr,
            "weight_decay": 0.0 if skip_decay else weight_decay,
            "name": ("vision_tower" if is_vision else "default") + ("_no_decay" if skip_decay else ""),
        })
    return groups
