"""The model card: metadata through huggingface_hub's ModelCardData/EvalResult, prose from card_template.md."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from llava.publish.provenance import StageRecord, dotted
from llava.publish.results import EvalResults

TEMPLATE_RESOURCE = "card_template.md"
REFERENCE_TITLES = {"seed": "seed reproduction", "official": "official OV-0.5B-si"}


@dataclass(frozen=True)
class CardInputs:
    repo_id: str
    results: EvalResults
    stages: list[StageRecord]
    manifest: dict[str, Any]
    weights_sha256: str
    facts: dict[str, Any]
    chart_name: str | None  # path of the chart inside the repo, None when the eval made none
    subset_files: dict[str, str]  # stage -> path of its subset index inside the repo
    record: dict[str, Any]  # the run record (publish/run_record.py): what the run really is


def build_card(inputs: CardInputs):
    """A `huggingface_hub.ModelCard` whose YAML header the Hub parses (model-index included)."""
    from huggingface_hub import ModelCard

    template = resources.files("llava.publish").joinpath(TEMPLATE_RESOURCE).read_text()
    data = card_data(inputs)
    return ModelCard.from_template(
        data, template_str=template,
        model_name=inputs.repo_id.split("/")[-1], repo_id=inputs.repo_id,
        description=inputs.record["what"]["description"], tiny=inputs.record["what"]["kind"] == "tiny-world",
        weights_sha256=inputs.weights_sha256,
        eval=eval_context(inputs.results, inputs.chart_name),
        losses=loss_rows(inputs.stages, inputs.facts),
        stages=[stage_context(stage, inputs) for stage in inputs.stages],
        hyperparameters=hyperparameter_rows(inputs.stages, inputs.facts["hyperparameters"]),
        run_rows=run_rows(inputs.manifest, inputs.weights_sha256),
    )


def card_data(inputs: CardInputs):
    from huggingface_hub import ModelCardData

    facts = inputs.facts
    datasets = sorted({s.dataset.repo_id for s in inputs.stages if s.dataset and s.dataset.repo_id})
    base = inputs.record["what"]["base_models"]  # only the Hub models this run started from
    return ModelCardData(
        license=facts["license"], library_name=facts["library_name"], pipeline_tag=facts["pipeline_tag"],
        base_model=base or None, base_model_relation=facts["base_model_relation"] if base else None,
        datasets=datasets or None, tags=list(facts["tags"]), model_name=inputs.repo_id.split("/")[-1],
        eval_results=eval_results(inputs.results),
    )


def eval_results(results: EvalResults) -> list:
    """One model-index metric per table row; the judge and VLMEvalKit commit travel with each."""
    from huggingface_hub import EvalResult

    # huggingface_hub's EvalResult takes a source only as name + URL; the built-in scorer has no URL of
    # its own, so its rows carry no source (metric_args.backend says which scorer made them).
    source = {}
    if results.vlmevalkit_commit:
        source = {"source_name": f"VLMEvalKit {results.vlmevalkit_commit[:12]}",
                  "source_url": f"https://github.com/open-compass/VLMEvalKit/tree/{results.vlmevalkit_commit}"}
    args = {"judge": results.judge, "backend": results.backend, "vlmevalkit_commit": results.vlmevalkit_commit,
            "n_questions": results.n_questions}
    return [
        EvalResult(
            task_type="visual-question-answering", task_name="Multiple-choice visual question answering",
            dataset_type=results.dataset, dataset_name=results.dataset, dataset_split=results.split,
            metric_type="accuracy", metric_name=f"{row.name} accuracy", metric_value=round(row.value, 6),
            metric_config=results.judge, metric_args=args, **source,
        )
        for row in results.rows
    ]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def eval_context(results: EvalResults, chart_name: str | None) -> dict[str, Any]:
    references = [key for key in REFERENCE_TITLES if any(getattr(row, key) is not None for row in results.rows)]
    backend_text = ("VLMEvalKit" if results.backend == "vlmevalkit"
                    else "llava-kit's built-in scorer (VLMEvalKit's rules)")
    rows = [
        {"name": row.name, "value": _pct(row.value),
         "cells": [{"ref": _pct(getattr(row, key)), "delta": _points(getattr(row, f"delta_{key}"))}
                   for key in references]}
        for row in results.rows
    ]
    return {"dataset": results.dataset, "split": results.split, "n_questions": results.n_questions,
            "judge": results.judge, "backend_text": backend_text, "vlmevalkit_commit": results.vlmevalkit_commit,
            "references": [REFERENCE_TITLES[key] for key in references], "rows": rows, "chart": chart_name}


def loss_rows(stages: list[StageRecord], facts: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for stage in stages:
        loss, seed = stage.train_loss, stage.seed_loss
        rows.append({
            "title": stage.name, "steps": "" if stage.steps is None else str(stage.steps),
            "loss": "not recorded" if loss is None else f"{loss:.3f}",
            "seed": "" if seed is None else f"{seed:.3f}",
            "delta": "" if loss is None or seed is None else f"{loss - seed:+.3f}",
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def hyperparameter_rows(stages: list[StageRecord], keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for key in keys:
        values = [_cell(dotted(stage.recipe, key)) for stage in stages]
        if any(value != "–" for value in values):
            rows.append({"key": key, "per_stage": values})
    return rows


def stage_context(stage: StageRecord, inputs: CardInputs) -> dict[str, Any]:
    return {"name": stage.name, "title": inputs.facts["stage_titles"].get(stage.name, stage.name),
            "recipe_origin": stage.recipe_origin, "dataset": stage.dataset,
            "subset_file": inputs.subset_files.get(stage.name)}


def run_rows(manifest: dict[str, Any], weights_sha: str) -> list[dict[str, str]]:
    versions = manifest.get("versions", {})
    rows = [
        ("llava-kit git commit", manifest.get("git_commit")),
        ("container image digest", manifest.get("image_digest")),
        ("recipe hash (published stage)", manifest.get("recipe_hash")),
        ("weights sha256", weights_sha),
        ("checkpoint written", manifest.get("created")),
        ("packages", ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))),
    ]
    return [{"key": key, "value": f"`{value}`" if key != "packages" else value}
            for key, value in rows if value]
