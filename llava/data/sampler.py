"""LLaVA-NeXT's `group_by_modality_length` order (recipe-semantics §5), with an explicit seed.

Every optimizer step is modality-pure (all ranks see images, or all see text), except one mixed
tail; inside a step samples go from longest to shortest. Hand-written because no library sampler
does this; unlike the original it draws from its own generator, so a resumed run sees the same order.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def _sorted_chunks(indices: list[int], lengths: list[int], size: int) -> list[list[int]]:
    chunks = [indices[i:i + size] for i in range(0, len(indices), size)]
    return [sorted(chunk, key=lambda i: -abs(lengths[i])) for chunk in chunks]


def _shuffled(indices: list[int], generator: torch.Generator) -> list[int]:
    return [indices[i] for i in torch.randperm(len(indices), generator=generator).tolist()]


def modality_grouped_order(lengths: list[int], megabatch: int, generator: torch.Generator) -> list[int]:
    """`lengths` > 0 for image samples, < 0 for text-only; `megabatch` = world x grad_accum x batch."""
    if any(length == 0 for length in lengths):
        raise ValueError("a sample has length 0; lengths must be signed word counts")
    image = [i for i, n in enumerate(lengths) if n > 0]
    text = [i for i, n in enumerate(lengths) if n < 0]
    if not image or not text:
        chunks = _sorted_chunks(_shuffled(image or text, generator), lengths, megabatch)
        return [i for chunk in chunks for i in chunk]
    image_chunks = _sorted_chunks(_shuffled(image, generator), lengths, megabatch)
    text_chunks = _sorted_chunks(_shuffled(text, generator), lengths, megabatch)
    tail = sorted(image_chunks[-1] + text_chunks[-1])
    full = image_chunks[:-1] + text_chunks[:-1]
    order = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for chunk in order + [tail] for i in chunk]


class ModalityLengthSampler(Sampler[int]):
    """Yields the whole order, the same on every rank and for every world size (`megabatch` is the global
    batch, which llava.train.resize keeps); accelerate's BatchSamplerShard then deals micro-batch k*W + r to
    rank r, so each optimizer step takes the same window of the order whatever W is."""

    def __init__(self, lengths: list[int], megabatch: int, seed: int):
        self.lengths = list(lengths)
        self.megabatch = megabatch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_order(self.lengths, self.megabatch, generator))
