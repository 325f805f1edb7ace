"""Data-pipeline throughput on one core: the bench's samples, and anyres against transformers' processor.

Measured in the main process with one torch thread, so the numbers are per dataloader worker.
"""

from __future__ import annotations

import io
import time
from contextlib import contextmanager

import torch
from PIL import Image


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rate(work, items: list, seconds: float) -> float | None:
    """Items per second of `work(item)` over the list, cycled until `seconds` pass (at least one pass)."""
    if not items:
        return None
    done, started = 0, time.perf_counter()
    while True:
        for item in items:
            work(item)
            done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def loader_rates(dataset, seconds: float) -> dict:
    """Image samples/s and all samples/s through the dataset's __getitem__ (decode, process, ids)."""
    images = [i for i, spec in enumerate(dataset.specs) if spec.image][:64]
    texts = [i for i, spec in enumerate(dataset.specs) if not spec.image][:64]
    with one_thread():
        image_rate = _rate(dataset.__getitem__, images, seconds)
        text_rate = _rate(dataset.__getitem__, texts, min(seconds, 0.2))
    fraction = len([s for s in dataset.specs if s.image]) / max(1, len(dataset.specs))
    # time per sample of the stage's mix = image share x image time + text share x text time
    per_sample = (fraction / image_rate if image_rate else 0.0) + ((1 - fraction) / text_rate if text_rate else 0.0)
    return {"images_per_s_per_core": image_rate, "samples_per_s_per_core": 1 / per_sample if per_sample else None,
            "image_fraction": fraction}


def _torchvision_backend() -> str:
    """Whether transformers' torchvision image processor can be built here, and if not, why."""
    try:
        from transformers.models.llava_onevision.image_processing_llava_onevision import (
            LlavaOnevisionImageProcessor,
        )
        LlavaOnevisionImageProcessor()
    except Exception as err:  # noqa: BLE001 - any failure means the backend is unusable here
        return f"unavailable: {type(err).__name__}: {err}"
    return "available (not timed: the kit uses the PIL backend, bit-exact with the original)"


def anyres_rates(dataset, seconds: float) -> dict:
    """anyres preprocessing per core: our pipeline (AnyresImages) vs transformers' PIL processor alone."""
    decoded = []
    for jpeg in list(dataset.jpegs.values())[:8]:
        with Image.open(io.BytesIO(jpeg)) as image:
            decoded.append(image.convert("RGB"))
    processor = dataset.pipeline.processor.image_processor
    with one_thread():
        ours = _rate(dataset.pipeline.process, decoded, seconds)
        theirs = _rate(lambda im: processor(images=[im], return_tensors="pt"), decoded, seconds)
    return {"kit_anyres_images_per_s_per_core": ours, "transformers_pil_images_per_s_per_core": theirs,
            "image_sizes": [list(im.size) for im in decoded], "torchvision_backend": _torchvision_backend()}
