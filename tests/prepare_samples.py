"""Tiny generated inputs for the prepare tests: images (good and broken), LLaVA records, parquet shards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

PROMPT = "\nPlease generate detailed descriptions of the given image."


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """An in-memory zip archive of `members` (name -> bytes)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    """A noisy RGB image (noise keeps JPEGs large enough to truncate meaningfully)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def write_image(path: Path, fmt: str = "JPEG", size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, size, seed))
    return path


def write_truncated_jpeg(path: Path) -> Path:
    data = image_bytes("JPEG", (96, 96), seed=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def record(sample_id: str, image: str | None = None, question: str = "What is shown?",
           answer: str = "A noisy picture.") -> dict:
    body = {"id": sample_id, "conversations": [
        {"from": "human", "value": ("<image>\n" if image else "") + question},
        {"from": "gpt", "value": answer},
    ]}
    if image:
        body["image"] = image
    return body


def planted_dataset(folder: Path) -> tuple[set[str], dict[str, str]]:
    """A dataset folder with one sample per fault kind; returns (good ids, {bad id: reason})."""
    images = folder / "images"
    good = []
    for number in range(6):
        write_image(images / f"good/{number}.jpg", seed=number, size=(40 + 10 * number, 48))
        good.append(record(f"good-{number}", f"good/{number}.jpg"))
    good.append(record("text-only", None, "Name a prime number.", "Seven."))
    write_image(images / "good/png.png", "PNG")
    good.append(record("good-png", "good/png.png"))

    write_truncated_jpeg(images / "bad/truncated.jpg")
    (images / "bad").mkdir(parents=True, exist_ok=True)
    (images / "bad/empty.jpg").write_bytes(b"")
    write_image(images / "bad/cover.jpg", "GIF")
    write_image(images / "bad/shared.jpg", seed=9)
    two_tags = record("two-tags", "bad/shared.jpg", question="first <image> second")
    wrong_order = record("wrong-order", "bad/shared.jpg")
    wrong_order["conversations"].reverse()
    bad = {
        "missing": (record("missing", "bad/not-there.jpg"), "missing image"),
        "truncated": (record("truncated", "bad/truncated.jpg"), "truncated image"),
        "zero-byte": (record("zero-byte", "bad/empty.jpg"), "zero-byte file"),
        "gif-as-jpg": (record("gif-as-jpg", "bad/cover.jpg"), "gif named .jpg"),
        "wrong-order": (wrong_order, "roles do not alternate human/gpt"),
        "two-tags": (two_tags, "2 <image> tags, expected 1"),
        "empty": ({"id": "empty", "image": "bad/shared.jpg", "conversations": []}, "empty conversation"),
    }
    records = good[:4] + [entry for entry, _ in bad.values()] + good[4:]
    (folder / "data.json").write_text(json.dumps(records, indent=1))
    return {entry["id"] for entry in good}, {sample_id: reason for sample_id, (_, reason) in bad.items()}


def recap_shard(path: Path, rows: list[tuple[str, bytes | None, str]]) -> Path:
    """A ReCap-shaped parquet shard: id, image {bytes, path}, conversations [{from, value}]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": [sample_id for sample_id, _, _ in rows],
        "image": [{"bytes": data, "path": None} for _, data, _ in rows],
        "conversations": [[{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption}]
                          for _, _, caption in rows],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=3)
    return path
