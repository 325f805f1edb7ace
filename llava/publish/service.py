"""`llava-kit publish`: gate, card, folder, push, in that order.

Refuses before any upload when the token is missing, when no eval result matches the exact weights,
or when the assembled folder does not load and generate.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llava.errors import KitError
from llava.manifest import require_manifest, weights_sha256
from llava.paths import VolumeLayout
from llava.publish.card import CardInputs, build_card
from llava.publish.hub_push import PushOutcome, push_folder, require_token
from llava.publish.load_check import check_loads_and_generates
from llava.publish.provenance import collect_stages, load_facts
from llava.publish.repo_folder import Extras, assemble
from llava.publish.run_record import build_record
from llava.publish.results import FoundResults, find_results


@dataclass(frozen=True)
class PublishRequest:
    checkpoint: Path
    repo_id: str
    private: bool = False
    dry_run: Path | None = None
    eval_results: Path | None = None
    endpoint: str | None = None


@dataclass(frozen=True)
class PublishReport:
    folder: Path | None  # the dry-run folder; None after a push (the staging folder is removed)
    weights_sha256: str
    results_path: Path
    sample_answer: str
    push: PushOutcome | None


def validate_repo_id(repo_id: str) -> str:
    """ORG/NAME, checked by huggingface_hub's own rules before anything is built or sent."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id as hub_rules

    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise KitError(f"--repo-id {repo_id!r} must look like ORG/NAME")
    try:
        hub_rules(repo_id)
    except HFValidationError as err:
        raise KitError(f"--repo-id {repo_id!r} is not a valid Hub repository id: {err}") from None
    return repo_id


def _extras(found: FoundResults, stages) -> tuple[Extras, str | None, dict[str, str]]:
    files = {"eval/results.json": found.path}
    table = found.path.parent / "table.md"
    if table.is_file():
        files["eval/table.md"] = table
    chart = "chart.png" if found.chart else None
    if found.chart:
        files["chart.png"] = found.chart
    subsets = {}
    for stage in stages:
        if stage.dataset and stage.dataset.subset_file:
            subsets[stage.name] = f"subsets/{stage.name}_subset_index.json"
            files[subsets[stage.name]] = stage.dataset.subset_file
    return Extras(files), chart, subsets


def build_repo_folder(request: PublishRequest, out: Path, layout: VolumeLayout) -> tuple[Path, str, FoundResults]:
    """Check the inputs and write the repo folder at `out`; return it, the weights hash and the results."""
    checkpoint = request.checkpoint
    manifest = require_manifest(checkpoint, "checkpoint")
    sha = weights_sha256(checkpoint)
    found = find_results(checkpoint, sha, layout.runs, request.eval_results)
    facts = load_facts()
    stages = collect_stages(checkpoint, manifest, layout, facts)
    extras, chart, subsets = _extras(found, stages)
    with tempfile.TemporaryDirectory(prefix=".publish-record-") as scratch:
        record, record_files = build_record(stages, found, layout, Path(scratch), facts)
        card = build_card(CardInputs(
            repo_id=request.repo_id, results=found.results, stages=stages, manifest=manifest,
            weights_sha256=sha, facts=facts, chart_name=chart, subset_files=subsets, record=record,
        ))
        folder = assemble(checkpoint, out, str(card), Extras({**extras.files, **record_files}))
    return folder, sha, found


def commit_message(checkpoint: Path, sha: str, found: FoundResults) -> tuple[str, str]:
    results = found.results
    overall = results.row("Overall") or results.rows[0]
    title = (f"llava-kit: publish {checkpoint.name} (weights {sha[:12]}, "
             f"{results.dataset} {overall.name} {100 * overall.value:.2f}%)")
    body = (f"weights sha256 {sha}\neval: {results.backend}, judge {results.judge}, "
            f"VLMEvalKit {results.vlmevalkit_commit or 'n/a'}, {results.n_questions} questions")
    return title, body


def publish(request: PublishRequest, layout: VolumeLayout | None = None) -> PublishReport:
    layout = layout or VolumeLayout.from_env()
    validate_repo_id(request.repo_id)
    if not request.checkpoint.is_dir():
        raise KitError(f"checkpoint folder {request.checkpoint} does not exist")
    token = None if request.dry_run else require_token()
    if request.dry_run:
        folder, sha, found = build_repo_folder(request, request.dry_run, layout)
        answer = check_loads_and_generates(folder)
        return PublishReport(folder, sha, found.path, answer, None)
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=_staging_parent(request.checkpoint)))
    try:
        folder, sha, found = build_repo_folder(request, staging / "repo", layout)
        answer = check_loads_and_generates(folder)
        title, body = commit_message(request.checkpoint, sha, found)
        outcome = push_folder(folder, request.repo_id, token=token, private=request.private,
                              commit_message=title, commit_description=body, endpoint=request.endpoint)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return PublishReport(None, sha, found.path, answer, outcome)


def _staging_parent(checkpoint: Path) -> Path | None:
    """Beside the checkpoint (the disk that already holds the weights once) when writable."""
    parent = checkpoint.resolve().parent
    return parent if os.access(parent, os.W_OK) else None
