"""The eval service: answer (built-in) or delegate (VLMEvalKit), score, and write the report folder.

Output folder (contracts.md): acc.csv, results.json, table.md, chart.png, predictions.jsonl,
questions.csv (per-question verdicts) and manifest.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.durable import write_text
from llava.errors import KitError
from llava.evaluate.chart import write_chart
from llava.evaluate.circular import QuestionResult, chance_level, score_questions
from llava.evaluate.loss_curves import write_lineage_chart
from llava.evaluate.mmbench_tsv import PASS_OFFSET, McqFile, McqRow, check_md5, file_md5, read_mmbench_tsv
from llava.evaluate.predictions import PREDICTIONS_NAME, PredictionLog, read_predictions
from llava.evaluate.report import (artifacts_markdown, questions_csv_text, results_document, single_pass_note,
                                   table_markdown, write_results_json)
from llava.evaluate.suite import Suite, adhoc_suite, load_suite
from llava.evaluate.table import L2_ABBREVIATIONS, SplitRow, accuracy_table, read_acc_csv, write_acc_csv
from llava.manifest import ManifestError, manifest_hash, require_manifest, weights_sha256, write_manifest
from llava.owned import claim_folder
from llava.paths import VolumeLayout

BACKENDS = ("builtin", "vlmevalkit")
EVAL_KIND = "eval"  # the llava.owned kind of an eval output folder
OUTPUT_FILES = ("acc.csv", "results.json", "table.md", "chart.png", PREDICTIONS_NAME, "questions.csv", "loss.png")


def resolve_tsv(suite: Suite, suite_path: Path, tsv: Path | None) -> Path:
    """--tsv wins; else the suite's file in $LMUData, fetched from the suite's tsv.url when missing.
    The suite's md5 is checked either way."""
    path = Path(tsv) if tsv is not None else suite.default_tsv_path()
    if path is None:
        raise KitError(f"{suite_path} names no TSV file (tsv.file is null): pass --tsv")
    if tsv is None and not path.is_file() and suite.tsv.url is not None:
        from llava.evaluate.tsv_download import download_tsv

        return download_tsv(suite, path, suite_path)
    if not path.is_file():
        raise KitError(f"TSV {path} does not exist; place {suite.dataset}'s TSV there (set LMUData) or pass --tsv")
    if suite.tsv.md5 is not None:
        check_md5(path, suite.tsv.md5, f"{suite_path} key tsv.md5")
    return path


def default_out_dir(checkpoint: Path) -> Path:
    return VolumeLayout.from_env().runs / Path(checkpoint).resolve().name / "eval"


def checkpoint_identity(checkpoint: Path, *, external: bool = False) -> tuple[str, str | None]:
    """(weights sha256, manifest hash). Kit checkpoints must carry a consistent manifest."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise KitError(f"checkpoint {checkpoint} is not a folder")
    manifest = None
    try:
        require_manifest(checkpoint, "checkpoint")
        manifest = manifest_hash(checkpoint)
    except ManifestError:
        if not external:
            raise
    return weights_sha256(checkpoint), manifest


def selected_rows(data: McqFile, limit: int | None, circular: bool) -> list[McqRow]:
    """All passes of the first `limit` questions (file order), so partial runs still score circularly."""
    if limit is None:
        return data.rows
    if limit < 1:
        raise KitError(f"--limit must be at least 1, got {limit}")
    groups = data.questions() if circular else {row.index: [row] for row in data.rows}
    keep = {key for key in list(groups)[:limit]}
    return [row for row in data.rows if (row.question_index if circular else row.index) in keep]


@dataclass
class Outcome:
    """What a backend produced: the table, per-question verdicts (if known) and facts for the manifest."""

    table: list[SplitRow]
    questions: list[QuestionResult]
    n_questions: int
    extra: dict[str, Any]
    acc_source: Path | None = None  # VLMEvalKit's own acc.csv
    vlmevalkit_commit: str | None = None
    chance: float | None = None  # expected Overall of uniform random answers


def write_outputs(out_dir: Path, *, suite: Suite, backend: str, outcome: Outcome, checkpoint: str | None,
                  weights: str | None) -> dict[str, Any]:
    """Write every report file; VLMEvalKit's own acc.csv, where there is one, is copied byte for byte."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if outcome.acc_source is not None:
        shutil.copyfile(outcome.acc_source, out_dir / "acc.csv")
    else:
        write_acc_csv(outcome.table, out_dir / "acc.csv")
    questions = outcome.questions
    results = results_document(suite=suite, backend=backend, table=outcome.table, n_questions=outcome.n_questions,
                               checkpoint=checkpoint, weights_sha256=weights,
                               vlmevalkit_commit=outcome.vlmevalkit_commit)
    results["chance"] = outcome.chance
    single = sum(1 for q in questions if "|" not in q.answers) if suite.circular else 0
    if single:  # VLMEvalKit rotates no question whose options are letters (mmbench_tsv._rotation_safe)
        results["single_pass_questions"] = single
    write_results_json(out_dir / "results.json", results)
    if questions:
        write_text(out_dir / "questions.csv", questions_csv_text(questions))
    labels = {k: suite.references[k].label for k in suite.references}
    write_chart(results, out_dir / "chart.png", n_abilities=_count_abilities(results, questions), labels=labels)
    (out_dir / "loss.png").unlink(missing_ok=True)
    loss = write_lineage_chart(Path(checkpoint), out_dir / "loss.png", f"training loss of {checkpoint}") \
        if checkpoint and Path(checkpoint).is_dir() else None
    write_text(out_dir / "table.md", table_markdown(results, suite)
                      + artifacts_markdown(out_dir, results, loss_chart=loss))
    return results


def _count_abilities(results: dict[str, Any], questions: list[QuestionResult]) -> int:
    """How many l2 rows follow Overall (from the verdicts; else the known MMBench abbreviations)."""
    if questions:
        return len({q.l2_category for q in questions})
    return sum(1 for r in results["rows"] if r["name"] in L2_ABBREVIATIONS.values())


def _finish(out_dir: Path, results: dict[str, Any], *, suite_path: Path | None, tsv: Path,
            inputs: dict[str, str], extra: dict[str, Any], started: float) -> dict[str, Any]:
    overall = next(r["value"] for r in results["rows"] if r["name"] == "Overall")
    write_manifest(out_dir, "eval", inputs=inputs, metrics={"overall": overall, "n_questions": results["n_questions"]},
                   extra={"suite": str(suite_path) if suite_path else None, "tsv": str(tsv), **extra}, started=started,
                   file_patterns=OUTPUT_FILES)
    print(f"{results['dataset']} Overall {100 * overall:.2f}% on {results['n_questions']} questions"
          f"{single_pass_note(results)} -> {out_dir}", file=sys.stderr)
    return results


def _run_builtin(suite: Suite, checkpoint: Path, tsv: Path, out_dir: Path, limit: int | None,
                 weights: str) -> Outcome:
    from llava.evaluate.builtin import CheckpointAnswerer, answer_rows

    data = read_mmbench_tsv(tsv, split_default=suite.split)
    rows = selected_rows(data, limit, suite.circular)
    meta = {"weights_sha256": weights, "tsv_md5": file_md5(tsv), "suite": suite.name,
            "prompt": suite.prompt.model_dump()}
    log = PredictionLog(out_dir, meta)
    reused = sum(1 for row in rows if row.index in log.answers)
    generated = 0
    if reused < len(rows):
        answerer = CheckpointAnswerer(checkpoint, suite.prompt.max_new_tokens)
        generated = answer_rows(data, rows, log, answerer, suite.prompt, session=uuid.uuid4().hex[:12])
    predictions = {row.index: log.answers[row.index] for row in rows}
    questions = score_questions(rows, predictions, circular=suite.circular, source=str(log.path))
    return Outcome(accuracy_table(questions), questions, len(questions), {"generated": generated, "reused": reused},
                   chance=chance_level(rows, circular=suite.circular))


def _run_vlmevalkit(suite: Suite, checkpoint: Path, tsv: Path, out_dir: Path) -> Outcome:
    """VLMEvalKit's table is the result; its predictions are re-scored by our scorer as a cross-check."""
    from llava.evaluate.vlmevalkit import run_vlmevalkit

    data = read_mmbench_tsv(tsv, split_default=suite.split)  # validates the file before a long GPU run
    acc, sheet, commit = run_vlmevalkit(suite, checkpoint, tsv, out_dir)
    outcome = Outcome(read_acc_csv(acc), [], len(data.questions()), {"vlmevalkit_acc_csv": str(acc)},
                      acc_source=acc, vlmevalkit_commit=commit, chance=chance_level(data.rows, circular=suite.circular))
    if sheet is None:
        return outcome
    predictions = read_predictions(sheet)
    write_text(out_dir / PREDICTIONS_NAME, _predictions_jsonl(predictions))
    outcome.questions = score_questions(data.rows, predictions, circular=suite.circular, source=str(sheet))
    outcome.n_questions = len(outcome.questions)
    ours = accuracy_table(outcome.questions)[0].values["Overall"]
    theirs = outcome.table[0].values["Overall"]
    outcome.extra.update(vlmevalkit_predictions=str(sheet), builtin_rescore_overall=ours)
    if ours != theirs:
        print(f"warning: VLMEvalKit's Overall {theirs} differs from the built-in re-score {ours}", file=sys.stderr)
    return outcome


def run_eval(checkpoint: Path, suite_path: Path, *, backend: str = "builtin", out_dir: Path | None = None,
             tsv: Path | None = None, limit: int | None = None, external: bool = False) -> dict:
    """Evaluate a checkpoint on a suite; returns the results.json content.

    `external` accepts a checkpoint without a kit manifest (e.g. a llava-hf model for an A/B).
    """
    started = time.time()
    if backend not in BACKENDS:
        raise KitError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "vlmevalkit" and limit is not None:
        raise KitError("--limit works with --backend builtin only (VLMEvalKit always runs the whole TSV)")
    suite_path, checkpoint = Path(suite_path), Path(checkpoint)
    suite = load_suite(suite_path)
    tsv = resolve_tsv(suite, suite_path, tsv)
    weights, manifest = checkpoint_identity(checkpoint, external=external)
    out_dir = claim_folder(Path(out_dir) if out_dir is not None else default_out_dir(checkpoint), EVAL_KIND,
                           inputs={"checkpoint": checkpoint, "TSV": tsv}, what="eval output")
    if backend == "builtin":
        outcome = _run_builtin(suite, checkpoint, tsv, out_dir, limit, weights)
    else:
        outcome = _run_vlmevalkit(suite, checkpoint, tsv, out_dir)
    results = write_outputs(out_dir, suite=suite, backend=backend, outcome=outcome, checkpoint=str(checkpoint),
                            weights=weights)
    inputs = {"checkpoint": manifest} if manifest else {}
    return _finish(out_dir, results, suite_path=suite_path, tsv=tsv, inputs=inputs,
                   extra={"backend": backend, **outcome.extra}, started=started)


def _predictions_jsonl(predictions: dict[int, object]) -> str:
    """Our predictions.jsonl from any prediction source (NaN cells become null)."""
    return "".join(json.dumps({"index": i, "prediction": p if isinstance(p, str) else None}) + "\n"
                   for i, p in sorted(predictions.items()))


def score_predictions(tsv: Path, predictions_path: Path, out_dir: Path, *, suite_path: Path | None = None,
                      checkpoint: Path | None = None) -> dict:
    """Score an existing predictions file (ours or VLMEvalKit's sheet) and write the report folder.

    Without a suite the TSV is scored circularly when it holds rotated passes, with no references.
    """
    started = time.time()
    if suite_path is not None:
        suite = load_suite(suite_path)
        tsv = resolve_tsv(suite, Path(suite_path), tsv)
        data = read_mmbench_tsv(tsv, split_default=suite.split)
    else:
        if tsv is None:
            raise KitError("eval score needs --tsv (or --suite naming the TSV)")
        data = read_mmbench_tsv(tsv)
        suite = adhoc_suite(tsv, circular=any(row.index >= PASS_OFFSET for row in data.rows))
    predictions = read_predictions(predictions_path)
    questions = score_questions(data.rows, predictions, circular=suite.circular, source=str(predictions_path))
    # the predictions file may sit in the eval folder it is re-scored into: it is read, never replaced
    out_dir = claim_folder(out_dir, EVAL_KIND, inputs={"checkpoint": checkpoint, "TSV": tsv}, what="eval output")
    if Path(predictions_path).resolve() != (out_dir / PREDICTIONS_NAME).resolve():
        write_text(out_dir / PREDICTIONS_NAME, _predictions_jsonl(predictions))
    weights = weights_sha256(checkpoint) if checkpoint is not None else None
    outcome = Outcome(accuracy_table(questions), questions, len(questions), {},
                      chance=chance_level(data.rows, circular=suite.circular))
    results = write_outputs(out_dir, suite=suite, backend="builtin", outcome=outcome,
                            checkpoint=str(checkpoint) if checkpoint else None, weights=weights)
    return _finish(out_dir, results, suite_path=suite_path, tsv=tsv, inputs={},
                   extra={"predictions": str(predictions_path)}, started=started)
