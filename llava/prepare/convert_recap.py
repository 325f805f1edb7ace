"""LLaVA-ReCap parquet shards (id, image {bytes}, conversations) -> LLaVA JSON records + image files.

Two passes so a 30k subset of 118k never materialises the other 88k images: the first reads only the
small `id` and `conversations` columns to build the sampling pool, the second streams the image column
and writes only the chosen rows.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llava.data.record_checks import IMAGE_TAG
from llava.durable import write_bytes
from llava.errors import KitError
from llava.prepare.sources import Columns
from llava.prepare.storage import require_free_space

_BATCH_ROWS = 256
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class RecapPool:
    """Converted records (no `image` key yet) and where each one's row lives."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)  # (shard number, row number)


def _parquet_file(shard: Path):
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError as err:
        raise KitError("reading ReCap parquet shards needs pyarrow: pip install 'llava-kit[prepare]'") from err
    try:
        return pq.ParquetFile(shard)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for truncated or foreign files
        raise KitError(f"parquet shard {shard} cannot be read ({err}): delete it and re-download") from err


def _check_columns(shard: Path, schema_names: list[str], wanted: list[str]) -> None:
    missing = [name for name in wanted if name not in schema_names]
    if missing:
        raise KitError(
            f"parquet shard {shard} has no column(s) {', '.join(missing)} (it has {', '.join(schema_names)}): "
            "fix `columns` for this stage in dataset_sources.yaml"
        )


def with_prompt(conversations: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """The first human turn becomes "<image>" + prompt, as in coco118k_stage1.5_finetune_w_prompt."""
    turns = [dict(turn) for turn in conversations]
    for turn in turns:
        if turn.get("from") == "human":
            turn["value"] = IMAGE_TAG + prompt
            break
    return turns


def read_recap_pool(shards: list[Path], columns: Columns, prompt: str) -> RecapPool:
    """Pass 1: ids and prompted conversations of every row, in shard order."""
    pool = RecapPool()
    for number, shard in enumerate(tqdm(shards, desc="read ReCap conversations", unit="shard")):
        handle = _parquet_file(shard)
        _check_columns(shard, handle.schema_arrow.names, [columns.id, columns.conversations, columns.image])
        row = 0
        for batch in handle.iter_batches(batch_size=4096, columns=[columns.id, columns.conversations]):
            ids = batch.column(columns.id).to_pylist()
            convs = batch.column(columns.conversations).to_pylist()
            for sample_id, conversations in zip(ids, convs):
                pool.records.append({"id": sample_id, "conversations": with_prompt(conversations or [], prompt)})
                pool.rows.append((number, row))
                row += 1
    return pool


def _image_bytes(cell: Any) -> bytes | None:
    if isinstance(cell, dict):
        return cell.get("bytes")
    return cell if isinstance(cell, (bytes, bytearray)) else None


def image_name(sample_id: str, data: bytes | None) -> str:
    """A file name from the sample id, with the extension of the image's real format."""
    from PIL import Image, UnidentifiedImageError

    extension = ".jpg"
    if data:
        try:
            with Image.open(io.BytesIO(data)) as image:
                extension = _EXTENSIONS.get(image.format or "", f".{(image.format or 'jpg').lower()}")
        except (UnidentifiedImageError, OSError):
            pass  # written as-is; verification quarantines it as undecodable
    return _UNSAFE.sub("_", sample_id) + extension


def write_recap_images(
    shards: list[Path], chosen: list[dict[str, Any]], rows: dict[str, tuple[int, int]],
    images_dir: Path, subdir: str, columns: Columns,
) -> None:
    """Pass 2: write the chosen rows' images under images_dir/subdir and set each record's `image`."""
    by_shard: dict[int, dict[int, dict[str, Any]]] = {}
    for record in chosen:
        shard_no, row = rows[record["id"]]
        by_shard.setdefault(shard_no, {})[row] = record
    pool_rows = sum(_parquet_file(shard).metadata.num_rows for shard in shards) or 1
    estimate = int(sum(os.path.getsize(shard) for shard in shards) * len(chosen) / pool_rows)
    require_free_space(images_dir, estimate, f"{len(chosen)} ReCap images")
    progress = tqdm(total=len(chosen), desc="write ReCap images", unit="img")
    for shard_no, wanted in sorted(by_shard.items()):
        offset = 0
        for batch in _parquet_file(shards[shard_no]).iter_batches(batch_size=_BATCH_ROWS, columns=[columns.image]):
            cells = batch.column(columns.image)
            for row in range(offset, offset + len(batch)):
                record = wanted.get(row)
                if record is None:
                    continue
                data = _image_bytes(cells[row - offset].as_py())
                relpath = f"{subdir}/{image_name(record['id'], data)}"
                record["image"] = relpath
                target = images_dir / relpath
                if data is not None and not target.is_file():
                    write_bytes(target, data, fsync=False)
                progress.update(1)
            offset += len(batch)
    progress.close()
