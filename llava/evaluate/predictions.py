"""Prediction files: our append-only predictions.jsonl (resumable) and VLMEvalKit's prediction sheets.

predictions.jsonl gets one line per answered row, flushed and fsynced as it is answered, so an
interrupted run loses at most the row in flight and a rerun only generates what is missing.
A sidecar predictions.meta.json pins what the answers were made with, so a resume never mixes
answers of two checkpoints or two prompt settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llava.durable import write_text
from llava.errors import KitError

PREDICTIONS_NAME = "predictions.jsonl"
META_NAME = "predictions.meta.json"


class PredictionLog:
    """The answers so far in `folder`, and a way to append more."""

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.path = Path(folder) / PREDICTIONS_NAME
        self.meta_path = Path(folder) / META_NAME
        self.meta = meta
        self.answers: dict[int, str] = {}
        self._check_meta()
        if self.path.exists():
            self._load()

    def _check_meta(self) -> None:
        if self.meta_path.exists():
            old = json.loads(self.meta_path.read_text())
            changed = sorted(k for k in set(old) | set(self.meta) if old.get(k) != self.meta.get(k))
            if changed:
                raise KitError(
                    f"{self.path} holds answers made with different {', '.join(changed)} "
                    f"(see {self.meta_path}); delete both files to start over, or pass another --out"
                )
        elif self.path.exists() and self.path.stat().st_size:
            raise KitError(f"{self.path} exists without {self.meta_path.name}; delete it or pass another --out")
        else:
            write_text(self.meta_path, json.dumps(self.meta, indent=2, sort_keys=True))

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]  # a crash can leave a torn last line: drop it
        if len(complete) != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
            record = _parse_line(line, self.path, number)
            self.answers[record["index"]] = record["prediction"]

    def append(self, index: int, prediction: str, **extra: Any) -> None:
        if index in self.answers:
            raise KitError(f"{self.path}: row index {index} was already answered")
        line = json.dumps({"index": index, "prediction": prediction, **extra}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.answers[index] = prediction


def _parse_line(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise KitError(f"{path}: line {number} is not JSON ({err.msg})") from err
    if not isinstance(record, dict) or not isinstance(record.get("index"), int) or "prediction" not in record:
        raise KitError(f"{path}: line {number} needs an integer 'index' and a 'prediction'")
    return record


def _read_jsonl(path: Path) -> dict[int, object]:
    answers: dict[int, object] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_line(line, path, number)
        if record["index"] in answers:
            raise KitError(f"{path}: line {number}: row index {record['index']} is predicted twice")
        answers[record["index"]] = record["prediction"]
    return answers


def _read_sheet(path: Path) -> dict[int, object]:
    """VLMEvalKit's `{model}_{dataset}.xlsx` (or .tsv/.csv): columns index and prediction."""
    import pandas as pd

    if path.suffix == ".xlsx":
        frame = pd.read_excel(path)
    else:
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    frame.columns = [c if len(str(c)) == 1 else str(c).lower() for c in frame.columns]
    missing = [c for c in ("index", "prediction") if c not in frame.columns]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing}; a prediction sheet needs index and prediction")
    duplicated = sorted(set(frame["index"][frame["index"].duplicated()].tolist()))
    if duplicated:
        raise KitError(f"{path}: row index(es) {duplicated[:10]} predicted more than once")
    return {int(i): p for i, p in zip(frame["index"], frame["prediction"])}


def read_predictions(path: str | os.PathLike) -> dict[int, object]:
    """Row index -> raw prediction (NaN stays NaN; the scorer turns it into 'nan' as VLMEvalKit does)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"predictions file {path} does not exist")
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix in (".xlsx", ".tsv", ".csv"):
        return _read_sheet(path)
    raise KitError(f"{path}: unknown predictions format; use predictions.jsonl or VLMEvalKit's .xlsx/.tsv/.csv")
