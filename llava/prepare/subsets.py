"""Deterministic, published subsets: which sample ids a stage trains on, and proof of where they came from.

The seed's author drew `random.sample(pool, k)` without a seed, so its subsets cannot be rebuilt. Here a
subset is a pure function of (seed, sample ids): every id gets the key sha256("<seed>:<id>") and the
`size` smallest keys win, in key order. Hand-written on purpose: unlike `random.Random.sample` or
numpy's `Generator.choice`, whose streams may change between Python/numpy releases, sha256 gives the
same answer on every version, process and PYTHONHASHSEED, does not depend on the pool's order, and a
smaller subset of the same seed is a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from llava.durable import write_bytes
from llava.errors import KitError

METHOD = "sha256-rank-v1"
INDEX_NAME = "subset_index.json"
_REQUIRED_KEYS = ("seed", "source_sha256", "size", "ids", "ids_sha256")


def assign_unique_ids(records: list[dict[str, Any]]) -> int:
    """Give every record a unique string id, in place; returns how many were changed.

    Sources can repeat ids (several mix665k tasks share a COCO image and its id), and a subset is a list of ids,
    so the k-th repeat (k >= 2) becomes "<id>#<k>". Repeats are counted in the order of the records' content
    (canonical JSON), not of their position, so a shuffled copy of the source (another machine's download or
    listing) gives every record the same id; records with equal content are interchangeable. A record
    without an id becomes "row<position>".
    """
    bases = [f"row{position}" if record.get("id") in (None, "") else str(record["id"])
             for position, record in enumerate(records)]
    repeated = {base for base, count in Counter(bases).items() if count > 1}

    def content(position: int) -> str:
        if bases[position] not in repeated:
            return ""
        return json.dumps(records[position], sort_keys=True, ensure_ascii=False, default=str)

    used: set[str] = set()
    repeats: Counter[str] = Counter()
    changed = 0
    for position in sorted(range(len(records)), key=lambda p: (bases[p], content(p), p)):
        record, base = records[position], bases[position]
        raw = record.get("id")
        new = base
        while new in used:
            repeats[base] += 1
            new = f"{base}#{repeats[base] + 1}"
        used.add(new)
        changed += new != base or raw is None or raw == ""
        record["id"] = new
    return changed


def ids_sha256(ids: list[str]) -> str:
    """The hash that identifies a subset: sha256 of the ids as a compact JSON list."""
    return hashlib.sha256(json.dumps(ids, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def _rank_key(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()


def draw_subset(pool_ids: Iterable[str], size: int, seed: int) -> list[str]:
    """The `size` ids with the smallest sha256("<seed>:<id>"), in that order."""
    pool = list(pool_ids)
    if len(set(pool)) != len(pool):
        raise KitError("sample ids in the pool are not unique; call assign_unique_ids first")
    if size > len(pool):
        raise KitError(f"subset size {size} is larger than the pool of {len(pool)} samples: lower --size")
    ranked = heapq.nsmallest(size, pool, key=lambda sample_id: _rank_key(seed, sample_id))
    return ranked


def make_index(
    pool_ids: list[str], *, size: int, seed: int, source_sha256: str, **extra: Any
) -> dict[str, Any]:
    """A subset index body; `extra` records how the pool was made (stage, filters, pool size)."""
    ids = draw_subset(pool_ids, size, seed)
    return {
        "method": METHOD,
        "seed": seed,
        "source_sha256": source_sha256,
        "pool_size": len(pool_ids),
        "size": len(ids),
        **extra,
        "ids_sha256": ids_sha256(ids),
        "ids": ids,
    }


def index_bytes(index: dict[str, Any]) -> bytes:
    """Canonical file content: no timestamps, stable key order, so equal subsets are equal bytes."""
    return (json.dumps(index, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def write_index(path: str | os.PathLike, index: dict[str, Any]) -> Path:
    return write_bytes(path, index_bytes(index))


def read_index(path: str | os.PathLike) -> dict[str, Any]:
    """Load a published index and check that its ids still match its own hash."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"subset index {path} does not exist: fix --from-index")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise KitError(f"subset index {path} is not valid JSON (line {err.lineno}): {err.msg}") from err
    missing = [key for key in _REQUIRED_KEYS if key not in (index if isinstance(index, dict) else {})]
    if missing:
        raise KitError(f"subset index {path} lacks key(s) {', '.join(missing)}")
    if ids_sha256(index["ids"]) != index["ids_sha256"] or len(index["ids"]) != index["size"]:
        raise KitError(f"subset index {path}: the ids do not match ids_sha256/size (the file was edited)")
    return index


def ids_from_index(index: dict[str, Any], pool_ids: Iterable[str], source_sha256: str, where: str,
                   check_source: bool = True) -> list[str]:
    """The index's ids, after checking it was drawn from this very source (unless `check_source` is off:
    `reproduce` takes the same ids from a changed source and then names the samples that differ)."""
    if check_source and index["source_sha256"] != source_sha256:
        raise KitError(
            f"subset index {where} was drawn from a source with sha256 {index['source_sha256'][:12]}..., "
            f"but this source hashes to {source_sha256[:12]}...: pin the index's revision in "
            "dataset_sources.yaml (or --sources) so the same source file is downloaded"
        )
    pool = set(pool_ids)
    absent = [sample_id for sample_id in index["ids"] if sample_id not in pool]
    if absent:
        shown = ", ".join(absent[:5])
        raise KitError(f"subset index {where}: {len(absent)} id(s) are not in the filtered pool ({shown}); "
                       "rebuild with the same filters as the index records")
    return list(index["ids"])
