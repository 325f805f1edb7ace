"""Prepared-data files (LLaVA JSON lists, JSONL, stats), written durably, and the free-space check that runs
before anything large is written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from llava.durable import write_bytes
from llava.errors import KitError
from llava.typed_config import read_document

# Head-room kept free on top of what a step expects to write (file-system metadata, logs).
SPARE_BYTES = 256 << 20


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def ensure_dir(path: str | os.PathLike, what: str) -> Path:
    """Create `path` (and parents), or a KitError that says why it cannot be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KitError(f"cannot create {what} {path}: {err.strerror or err}; choose a writable location") from err
    return path


def require_free_space(folder: str | os.PathLike, need_bytes: int, what: str) -> None:
    """Refuse to start a write of `need_bytes` into `folder` that the disk cannot hold."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():  # the target may not exist yet: measure the disk it will live on
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes + SPARE_BYTES > free:
        raise KitError(
            f"not enough disk space for {what} in {folder}: needs {_gib(need_bytes)} "
            f"(+{_gib(SPARE_BYTES)} spare), {_gib(free)} free; free space there or point "
            "LLAVA_KIT_DATASETS (or --out) at a larger disk"
        )


def write_json_atomic(path: str | os.PathLike, body: Any) -> Path:
    return write_bytes(path, (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode())


def write_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """A LLaVA JSON list with one record per line: valid JSON that diffs and greps well."""
    lines = [json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in records]
    text = "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"
    return write_bytes(path, text.encode())


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    return write_bytes(path, text.encode())


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load a LLaVA JSON list, with a KitError that names the file on any problem."""
    body = read_document(path, f"{path} does not exist: run `llava-kit prepare data` for this stage first", as_json=True)
    if not isinstance(body, list):
        raise KitError(f"{path} must hold a JSON list of records, found a {type(body).__name__}")
    return body


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise KitError(f"{path} line {number} is not valid JSON: {err.msg}") from err
    return rows
