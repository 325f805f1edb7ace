"""One sha256 per training sample (its record and the bytes of its images), in data.json order.

Published with the run record so that a reproduction can say which sample, not just which file, differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llava.manifest import sha256_file, sha256_text


def _images(record: dict) -> list[str]:
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


def sample_digest(record: dict, image_folder: Path) -> str:
    """sha256 over the record's canonical JSON and each image file's sha256 ("missing" when absent)."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
    for name in _images(record):
        path = image_folder / name
        digest.update(f"\n{name}:{sha256_file(path) if path.is_file() else 'missing'}".encode())
    return digest.hexdigest()


def sample_digests(data_file: Path, image_folder: Path) -> list[list[str]]:
    """[[sample id, digest], ...] for every record of a LLaVA JSON file."""
    records = json.loads(Path(data_file).read_text())
    return [[str(record.get("id", i)), sample_digest(record, Path(image_folder))] for i, record in enumerate(records)]


def digests_sha256(digests: list[list[str]]) -> str:
    return sha256_text(json.dumps(digests))


def first_difference(recorded: list[list[str]], found: list[list[str]]) -> str | None:
    """The first sample id whose digest differs (or that one side lacks), in the recorded order; None if equal."""
    here = dict(map(tuple, found))
    for sample_id, digest in recorded:
        if here.get(sample_id) != digest:
            return sample_id
    extra = [sample_id for sample_id, _ in found if sample_id not in dict(map(tuple, recorded))]
    return extra[0] if extra else None
