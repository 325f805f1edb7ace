"""The run record (`llava_kit_run.json`): the whole run, machine-readable, collected from its manifests.

Nothing here is re-derived: each stage's recipe, loss history, versions and seeds come from its checkpoint
manifest; model pins and dataset commits from the model and dataset manifests; subset ids and per-sample
digests from the dataset folders; the eval suite and results from the eval folder. `llava-kit reproduce`
reads it back; the model card's description and `base_model` are generated from it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llava.errors import KitError
from llava.manifest import read_manifest, sha256_file
from llava.paths import VolumeLayout
from llava.publish.provenance import StageRecord
from llava.publish.results import FoundResults
from llava.publish.sample_digests import digests_sha256, sample_digests

RECORD_NAME = "llava_kit_run.json"
RECORD_DIR = "record"
FORMAT = 1


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder) if folder.is_dir() else None
    except KitError:
        return None


def _model(path: str | None, layout: VolumeLayout) -> dict[str, Any] | None:
    """A model input of a stage: its Hub pin (repo, revision, resolved commit) or what made it."""
    if not path:
        return None
    manifest = _manifest(layout.resolve(path)) or {}
    extra = manifest.get("extra", {})
    return {"path": path, "repo_id": extra.get("repo_id"), "revision": extra.get("revision"),
            "commit": extra.get("commit"), "source": extra.get("source"), "seed": extra.get("seed")}


def dataset_entry(name: str, recipe: dict[str, Any], layout: VolumeLayout, out: Path,
                  files: dict[str, Path]) -> dict[str, Any] | None:
    """A stage's data: source and resolved commit, subset index, per-sample digests (written under `out`)."""
    data = recipe.get("data", {})
    if not data.get("path"):
        return None
    data_file, image_folder = layout.resolve(data["path"]), layout.resolve(data.get("image_folder") or ".")
    manifest = _manifest(data_file.parent) or {}
    extra = manifest.get("extra", {})
    source = extra.get("source") if isinstance(extra.get("source"), dict) else {}
    hub = extra.get("hub") if isinstance(extra.get("hub"), dict) else {}
    entry = {"path": data["path"], "image_folder": data.get("image_folder"), "stage": extra.get("stage"),
             "repo_id": extra.get("repo_id") or source.get("repo_id") or hub.get("repo_id"),
             "commit": extra.get("commit") or source.get("commit") or hub.get("commit"),
             "revision": source.get("revision"),
             "description": extra.get("description") or (extra.get("source") if isinstance(extra.get("source"), str)
                                                         else None),
             "world": extra.get("world"), "subset": extra.get("subset") or None, "data_sha256": None,
             "samples": None}
    if data_file.is_file():
        digests = sample_digests(data_file, image_folder)
        rel = f"{RECORD_DIR}/samples/{name}.json"
        files[rel] = _write_json(out / rel, digests)
        entry.update(data_sha256=sha256_file(data_file), samples=len(digests),
                     sample_digests={"file": rel, "sha256": digests_sha256(digests)})
    index = data_file.parent / "subset_index.json"
    if index.is_file():  # publish's _extras puts the file itself at the same repo path
        body = json.loads(index.read_text())
        entry["subset"] = {**{k: v for k, v in body.items() if k != "ids"},
                           "file": f"subsets/{name}_subset_index.json", "sha256": sha256_file(index)}
        files[entry["subset"]["file"]] = index
    return entry


def _write_json(path: Path, body: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1, sort_keys=True))
    return path


def _stage(stage: StageRecord, layout: VolumeLayout, out: Path, files: dict[str, Path]) -> dict[str, Any]:
    manifest, recipe = stage.manifest, stage.recipe or {}
    extra = manifest.get("extra", {})
    entry = {"name": stage.name, "recipe": recipe, "recipe_hash": manifest.get("recipe_hash"),
             "recipe_origin": stage.recipe_origin, "profile": recipe.get("profile"),
             "seed": recipe.get("training", {}).get("seed"), "metrics": manifest.get("metrics", {}),
             "loss_history": extra.get("loss_history") or [], "world_size": extra.get("world_size"),
             "device": extra.get("device"), "versions": manifest.get("versions", {}),
             "image_digest": manifest.get("image_digest"), "git_commit": manifest.get("git_commit"),
             "created": manifest.get("created"),
             "models": {key: _model(recipe.get("init", {}).get(key), layout) for key in ("llm", "vision_tower")},
             "init_checkpoint": recipe.get("init", {}).get("from_checkpoint"),
             "dataset": dataset_entry(stage.name, recipe, layout, out, files)}
    if stage.folder is not None and (stage.folder / "manifest.json").is_file():
        rel = f"{RECORD_DIR}/stages/{stage.name}/manifest.json"
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(stage.folder / "manifest.json", target)
        files[rel] = target
        entry["manifest_file"] = rel
    return entry


def _eval(found: FoundResults, layout: VolumeLayout, out: Path, files: dict[str, Path]) -> dict[str, Any]:
    results = found.results
    manifest = _manifest(found.path.parent) or {}
    extra = manifest.get("extra", {})
    entry = {"suite": results.suite, "dataset": results.dataset, "split": results.split, "backend": results.backend,
             "judge": results.judge, "vlmevalkit_commit": results.vlmevalkit_commit,
             "n_questions": results.n_questions, "weights_sha256": results.weights_sha256,
             "rows": [{"name": row.name, "value": row.value} for row in results.rows],
             "results_file": "eval/results.json", "suite_file": None, "tsv": None}
    suite = Path(extra["suite"]) if extra.get("suite") else None
    if suite is not None and suite.is_file():
        rel = f"{RECORD_DIR}/eval/{suite.name}"
        files[rel] = suite
        entry.update(suite_file=rel, suite_sha256=sha256_file(suite))
    predictions = found.path.parent / "predictions.jsonl"
    if predictions.is_file():  # the raw answers: a reproduction compares them one by one
        files[f"{RECORD_DIR}/eval/predictions.jsonl"] = predictions
        entry["predictions_file"] = f"{RECORD_DIR}/eval/predictions.jsonl"
    tsv = Path(extra["tsv"]) if extra.get("tsv") else None
    if tsv is not None and tsv.is_file():
        entry["tsv"] = {"name": tsv.name, "sha256": sha256_file(tsv), "path": _placeholder(tsv, layout)}
    return entry


def _placeholder(path: Path, layout: VolumeLayout) -> str | None:
    """`{datasets}/eval/x.tsv` for a file inside the datasets volume (where a reproduction finds its own)."""
    try:
        return "{datasets}/" + path.resolve().relative_to(layout.datasets.resolve()).as_posix()
    except ValueError:
        return None


def build_record(stages: list[StageRecord], found: FoundResults, layout: VolumeLayout,
                 out: Path, seed_facts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The record and the files it names (repo path -> file written under `out` or already on disk)."""
    files: dict[str, Path] = {}
    stage_entries = [_stage(stage, layout, out, files) for stage in stages]
    last = stage_entries[-1]
    record = {
        "format": FORMAT, "kind": "llava-kit run record",
        "environment": {"versions": last["versions"], "image_digest": last["image_digest"],
                        "git_commit": last["git_commit"], "world_size": last["world_size"],
                        "device": last["device"], "profile": last["profile"]},
        "stages": stage_entries, "eval": _eval(found, layout, out, files),
        "seeds": {stage["name"]: stage["seed"] for stage in stage_entries},
    }
    worlds = [s["dataset"]["world"] for s in stage_entries if s["dataset"] and s["dataset"].get("world")]
    if worlds:
        record["seeds"]["world"] = worlds[0]["seed"]
    record["what"] = describe(record, seed_facts)
    files[RECORD_NAME] = _write_json(out / RECORD_NAME, record)
    return record, files


def describe(record: dict[str, Any], seed_facts: dict[str, Any]) -> dict[str, Any]:
    """What the run really is, in words and as `base_model` ids: only models it actually started from."""
    stages = record["stages"]
    models = [m for s in stages for m in s["models"].values() if m]
    base = sorted({m["repo_id"] for m in models if m.get("repo_id")})
    datasets = [s["dataset"] for s in stages if s["dataset"]]
    world = next((d["world"] for d in datasets if d.get("world")), None)
    if world is not None:
        kind = "tiny-world"
        text = (f"A tiny test model built by llava-kit on its synthetic shapes world (world seed {world['seed']}"
                f"{', blank images' if world.get('blank_images') else ''}): "
                + "; ".join(f"{m['path'].rsplit('/', 1)[-1]} ({m.get('source') or 'origin not recorded'})"
                            for m in _unique(models))
                + ". It exists to test the pipeline; it is not a useful vision-language model and was not "
                  "trained from any Hub model.")
    else:
        seed_bases = sorted(seed_facts["base_model"])
        own = [d["path"] for d in datasets if not d.get("repo_id")]
        kind = "recipe" if base == seed_bases and not own else "own"
        named = [f"**{repo}**" + (f" (commit `{m['commit'][:12]}`)" if m.get("commit") else "")
                 for repo, m in _by_repo(models).items()]
        named += [f"{m['path'].rsplit('/', 1)[-1]} ({m.get('source') or 'origin not recorded'})"
                  for m in _unique(models) if not m.get("repo_id")]
        models_text = ", ".join(named) or "a checkpoint whose base models are not recorded"
        text = f"A vision-language model in the LLaVA-OneVision layout, trained with llava-kit from {models_text}"
        text += (f" on its own data ({', '.join(own)})." if own else
                 " on " + ", ".join(sorted({d['repo_id'] for d in datasets})) + ".")
        if kind == "recipe":
            seed = seed_facts["seed"]["model"]
            text += f" It follows the recipe of [{seed}](https://huggingface.co/{seed})."
    names = " -> ".join(s["name"] for s in stages)
    return {"kind": kind, "base_models": base, "description": f"{text} Stages trained: {names}."}


def _unique(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({m["path"]: m for m in models}.values())


def _by_repo(models: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["repo_id"]: m for m in models if m.get("repo_id")}
