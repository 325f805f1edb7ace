"""Find the eval results that belong to a checkpoint: the same weights hash, or nothing is published."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llava.errors import KitError
from llava.typed_config import load_config

RESULTS_NAME = "results.json"


class ResultRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    value: float
    seed: float | None = None
    official: float | None = None
    delta_seed: float | None = None
    delta_official: float | None = None


class EvalResults(BaseModel):
    """results.json as contracts.md defines it (written by llava.evaluate)."""

    model_config = ConfigDict(extra="allow")

    suite: str
    dataset: str
    backend: str
    judge: str
    vlmevalkit_commit: str | None = None
    checkpoint: str | None = None
    weights_sha256: str | None = None
    split: str
    rows: list[ResultRow]
    n_questions: int
    created: str

    def row(self, name: str) -> ResultRow | None:
        return next((row for row in self.rows if row.name == name), None)


@dataclass(frozen=True)
class FoundResults:
    path: Path
    results: EvalResults

    @property
    def chart(self) -> Path | None:
        chart = self.path.parent / "chart.png"
        return chart if chart.is_file() else None


def read_results(path: str | Path) -> EvalResults:
    """The results.json of `llava-kit eval`, validated."""
    return load_config(EvalResults, path, "results.json of `llava-kit eval`", f"eval results {path} do not exist")


def candidate_paths(checkpoint: Path, runs_root: Path) -> list[Path]:
    """Where evals land by default: CHECKPOINT/eval/ and runs/<name>/eval/ (one level of subfolders too)."""
    patterns = [(checkpoint / "eval", RESULTS_NAME), (runs_root, f"*/eval/{RESULTS_NAME}"),
                (runs_root, f"*/eval/*/{RESULTS_NAME}")]
    found: list[Path] = []
    for base, pattern in patterns:
        if base.is_dir():
            found += sorted(base.glob(pattern))
    return found


def find_results(checkpoint: Path, weights_sha: str, runs_root: Path, explicit: str | Path | None = None) -> FoundResults:
    """The newest results.json whose weights_sha256 is `weights_sha`; refuse when there is none."""
    if explicit is not None:
        results = read_results(explicit)
        if results.weights_sha256 != weights_sha:
            raise KitError(
                f"{explicit} evaluated weights {str(results.weights_sha256)[:12]}..., but {checkpoint} holds "
                f"{weights_sha[:12]}...: evaluate this checkpoint (`llava-kit eval`) and pass that results.json"
            )
        return FoundResults(Path(explicit), results)
    matches: list[tuple[str, Path, EvalResults]] = []
    for path in candidate_paths(checkpoint, runs_root):
        try:
            results = read_results(path)
        except KitError:
            continue  # a half-written or foreign file elsewhere in runs/ must not block publishing
        if results.weights_sha256 == weights_sha:
            matches.append((results.created, path, results))
    if not matches:
        raise KitError(
            f"no eval result for {checkpoint} (weights sha256 {weights_sha[:12]}...) in {checkpoint / 'eval'} "
            f"or {runs_root}/*/eval/: run `llava-kit eval` on this checkpoint first, or pass --eval RESULTS_JSON"
        )
    _, path, results = max(matches, key=lambda item: (item[0], str(item[1])))
    return FoundResults(path, results)


def results_summary(results: EvalResults) -> dict[str, Any]:
    overall = results.row("Overall") or results.rows[0]
    return {"dataset": results.dataset, "split": results.split, "name": overall.name, "value": overall.value}
