"""The recorded eval suite on the reproduced last stage, compared row by row and answer by answer."""

from __future__ import annotations

from pathlib import Path

from llava.manifest import sha256_file
from llava.packaged import SUITES_DIR
from llava.paths import VolumeLayout
from llava.reproduce.compare import EvalComparison, compare_answers, compare_eval
from llava.reproduce.inputs import DataCheck
from llava.reproduce.record import LoadedRecord


def packaged_suite(entry: dict) -> Path:
    """The kit's own suite file of that name (the seed's numbers name mmbench_dev_en)."""
    return SUITES_DIR / (entry.get("packaged_suite") or f"{entry['suite']}.yaml")


def reproduce_eval(record: LoadedRecord, layout: VolumeLayout, out: Path, tolerances: dict, exact: bool,
                   complete: bool) -> tuple[EvalComparison, DataCheck | None]:
    """The recorded suite on the reproduced last stage (when the whole run was reproduced), and the check
    of the test TSV against the recorded one."""
    from llava.evaluate.service import run_eval

    entry = record.body["eval"]
    if not complete:
        return compare_eval(entry, None, tolerances, exact), None
    suite = record.file(entry.get("suite_file")) or packaged_suite(entry)
    tsv, check = None, None
    if entry.get("tsv") and entry["tsv"].get("path"):
        tsv = layout.resolve(entry["tsv"]["path"])
        same = tsv.is_file() and sha256_file(tsv) == entry["tsv"]["sha256"]
        check = DataCheck("eval", entry["tsv"]["name"], same, None if same else entry["tsv"]["name"],
                          "" if same else "the test TSV differs from the recorded one (sha256)")
    results = run_eval(layout.checkpoints / record.stage_names[-1], suite, backend=entry["backend"],
                       out_dir=out / "eval", tsv=tsv)
    evaluation = compare_eval(entry, results, tolerances, exact)
    compare_answers(evaluation, record.file(entry.get("predictions_file")), out / "eval" / "predictions.jsonl", exact)
    return evaluation, check
