"""Batches for the trainer: right padding, -100 labels, and the skip ledger for bad samples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from llava.data.dataset import SkippedSample
from llava.data.templates import IGNORE_INDEX
from llava.errors import KitError


class SkipLedger:
    """Appends skipped samples to the run's skips file and stops the run past the budget.

    The budget is a fraction of the whole dataset, so the decision does not depend on where in
    the epoch the bad samples happen to sit. Several dataloader workers may append at once:
    each line is one small O_APPEND write.
    """

    def __init__(self, path: str | Path, dataset_size: int, max_fraction: float):
        self.path = Path(path)
        self.budget = int(max_fraction * dataset_size)
        self.max_fraction = max_fraction

    def seen_ids(self) -> set[str]:
        if not self.path.is_file():
            return set()
        return {json.loads(line)["id"] for line in self.path.read_text().splitlines() if line.strip()}

    def record(self, skip: SkippedSample) -> None:
        seen = self.seen_ids()
        if skip.sample_id not in seen:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"id": skip.sample_id, "index": skip.index, "reason": skip.reason}) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            seen.add(skip.sample_id)
        if len(seen) > self.budget:
            raise KitError(
                f"{len(seen)} samples skipped, more than the max_skip_fraction {self.max_fraction:.2%} "
                f"of the dataset ({self.budget} samples); see {self.path} for each id and reason"
            )


class Collator:
    def __init__(self, pad_token_id: int, pixel_key: str, ledger: SkipLedger | None = None):
        self.pad_token_id = pad_token_id
        self.pixel_key = pixel_key
        self.ledger = ledger

    def __call__(self, items: list) -> dict:
        good = []
        for item in items:
            if isinstance(item, SkippedSample):
                if self.ledger is None:
                    raise KitError(f"sample {item.sample_id} (index {item.index}) is unusable: {item.reason}")
                self.ledger.record(item)
            else:
                good.append(item)
        if not good:  # every sample of this micro-batch was bad: a step with no supervised tokens
            good = [{"input_ids": [self.pad_token_id], "labels": [IGNORE_INDEX]}]
        return self._pad(good)

    def _pad(self, items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            mask[row, :n] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        images = [item for item in items if "pixel_values" in item]
        if images:
            batch.update(self._stack_pixels(images))
        return batch

    def _stack_pixels(self, items: list[dict]) -> dict:
        pixels = [item["pixel_values"] for item in items]
        if self.pixel_key == "square_pixel_values":
            return {"square_pixel_values": torch.stack(pixels)}
        tiles = max(p.shape[0] for p in pixels)
        padded = torch.zeros((len(pixels), tiles, *pixels[0].shape[1:]), dtype=pixels[0].dtype)
        for row, p in enumerate(pixels):
            padded[row, :p.shape[0]] = p
        sizes = torch.tensor([list(item["image_size"]) for item in items], dtype=torch.long)
        return {"pixel_values": padded, "image_sizes": sizes}
