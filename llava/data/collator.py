"""Batches for the trainer: right padding, -100 labels, and the skip ledger for bad samples."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

from llava.data.dataset import SkippedSample
from llava.data.templates import IGNORE_INDEX
from llava.errors import KitError

log = logging.getLogger(__name__)


class SkipLedger:
    """Appends skipped samples to the run's skips file and stops the run past the budget.

    The budget is a fraction of the whole dataset, so the decision does not depend on where in
    the epoch the bad samples happen to sit. The file is the count: dataloader workers and ranks
    all append to it (one small O_APPEND write per line), a resumed run keeps it, and a sample
    seen again in a later epoch or after a resume counts once.
    """

    def __init__(self, path: str | Path, dataset_size: int, max_fraction: float):
        self.path = Path(path)
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        # floor without float noise: 0.29 * 100 must allow 29, not 28
        self.budget = math.floor(max_fraction * dataset_size + 1e-9)
        self._seen: set[str] = set()
        self._offset = 0

    def seen_ids(self) -> set[str]:
        """Every id in the file; reads only what other processes appended since the last call."""
        if not self.path.is_file():
            self._seen, self._offset = set(), 0
            return set()
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            tail = handle.read()
        complete = tail[:tail.rfind(b"\n") + 1]  # a line still being written is read next time
        self._offset += len(complete)
        self._seen.update(json.loads(line)["id"] for line in complete.decode().splitlines() if line.strip())
        return set(self._seen)

    def reset(self) -> None:
        """A fresh (not resumed) run starts with an empty ledger."""
        self.path.unlink(missing_ok=True)
        self._seen, self._offset = set(), 0

    def over_budget(self) -> bool:
        return len(self.seen_ids()) > self.budget

    def budget_message(self) -> str:
        return (f"{len(self.seen_ids())} of {self.dataset_size} training samples were unusable, more than "
                f"data.max_skip_fraction={self.max_fraction:g} allows ({self.budget} samples); every skipped id "
                f"and reason is in {self.path}. Fix or remove those samples (or raise data.max_skip_fraction in "
                f"the recipe), then run the same command again: it resumes from the last complete checkpoint")

    def record(self, skip: SkippedSample) -> None:
        if skip.sample_id not in self.seen_ids():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"id": skip.sample_id, "index": skip.index, "reason": skip.reason}) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            log.warning("skipped sample %s (index %d): %s", skip.sample_id, skip.index, skip.reason)
        if self.over_budget():
            raise KitError(self.budget_message())


def placeholder_image_row(pipeline, image_token_id: int) -> dict:
    """A row of one blank image and nothing to learn, added to micro-batches that have no image.

    Under ZeRO-3 every rank must gather the same parameters in the same order: a text-only rank that
    skipped the vision tower (or ran it at another point) while its neighbour ran the image path
    aborts the collective. As its own row, the blank image changes no sample's attention and adds no
    supervised token, so the loss is unchanged. The smallest-token blank of a few shapes is used.
    """
    from PIL import Image

    tile = getattr(pipeline, "tile", None) or pipeline.processor.image_processor.size["height"]
    blanks = [pipeline.process(Image.new("RGB", size)) for size in ((tile, tile), (tile, 1), (1, tile))]
    blank = min(blanks, key=lambda item: item.num_tokens)
    return {"input_ids": [image_token_id] * blank.num_tokens, "labels": [IGNORE_INDEX] * blank.num_tokens,
            "pixel_values": blank.pixel_values, "image_size": blank.image_size}


class Collator:
    def __init__(self, pad_token_id: int, pixel_key: str, ledger: SkipLedger | None = None,
                 placeholder: dict | None = None):
        self.pad_token_id = pad_token_id
        self.pixel_key = pixel_key
        self.ledger = ledger
        self.placeholder = placeholder

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
        if self.placeholder is not None and not any(image_rows(item) for item in good):
            good.append(self.placeholder)
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
        per_item = [rows for rows in map(image_rows, items) if rows]
        if per_item:
            batch.update(self._stack_pixels(per_item))
        return batch

    def _stack_pixels(self, per_item: list[list[dict]]) -> dict:
        """One pixel row per image, in token order; `batch_num_images` tells transformers which are pad mode."""
        rows = [row for item_rows in per_item for row in item_rows]
        pixels = [row["pixel_values"] for row in rows]
        if self.pixel_key == "square_pixel_values":
            return {"square_pixel_values": torch.stack(pixels)}
        tiles = max(p.shape[0] for p in pixels)
        padded = torch.zeros((len(pixels), tiles, *pixels[0].shape[1:]), dtype=pixels[0].dtype)
        for row, p in enumerate(pixels):
            padded[row, :p.shape[0]] = p
        sizes = torch.tensor([list(row["image_size"]) for row in rows], dtype=torch.long)
        batch = {"pixel_values": padded, "image_sizes": sizes}
        if any(len(item_rows) > 1 for item_rows in per_item):
            batch["batch_num_images"] = torch.tensor([len(item_rows) for item_rows in per_item], dtype=torch.long)
        return batch


def image_rows(item: dict) -> list[dict]:
    """A dataset item's images as {pixel_values, image_size} rows: one sample's `images`, or its single image."""
    if "images" in item:
        return item["images"]
    if "pixel_values" in item:
        return [{"pixel_values": item["pixel_values"], "image_size": item["image_size"]}]
    return []
