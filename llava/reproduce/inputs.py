"""Prepare the recorded inputs and check them against the record, sample by sample.

The tiny shapes world is rebuilt from its recorded seed and size (that is its "download"); Hub datasets are
prepared at the recorded commit from the published subset index; Hub models at the recorded commit. A
folder already prepared is reused. Each stage's data is then compared with the record's per-sample digests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.errors import KitError
from llava.manifest import read_manifest
from llava.paths import VolumeLayout
from llava.publish.sample_digests import first_difference, sample_digests
from llava.reproduce.record import LoadedRecord

WORLD_DIR = "world"


@dataclass
class DataCheck:
    stage: str
    dataset: str  # the Hub repo id, or the dataset folder for a world or own data
    matches: bool | None  # None: the record holds no per-sample digests to compare with
    first_sample: str | None = None
    note: str = ""


def world_params(record: dict[str, Any]) -> dict[str, Any] | None:
    return next((s["dataset"]["world"] for s in record["stages"] if s.get("dataset") and s["dataset"].get("world")),
                None)


def reproduction_layout(record: dict[str, Any], home: VolumeLayout, out: Path) -> VolumeLayout:
    """Checkpoints and runs of the reproduction go under `out`; a tiny world lives there too."""
    world = out / WORLD_DIR
    uses_world = world_params(record) is not None
    return VolumeLayout(models=world / "models" if uses_world else home.models,
                        datasets=world / "datasets" if uses_world else home.datasets,
                        checkpoints=out / "checkpoints", runs=out / "runs", hf_cache=home.hf_cache)


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder) if (folder / "manifest.json").is_file() else None
    except KitError:
        return None


def _prepare_world(params: dict[str, Any], layout: VolumeLayout, say) -> None:
    from llava.synthetic.world import WorldSize, build_world

    root = layout.datasets.parent
    built = [(_manifest(layout.datasets / name) or {}).get("extra", {}).get("world")
             for name in ("stage1", "stage1_5", "stage2")]
    if all(found == params for found in built):
        say(f"prepare: the shapes world in {root} is already built with the recorded seed and size (reused)")
        return
    say(f"prepare: rebuilding the shapes world from its recorded seed {params['seed']} in {root}")
    build_world(root, seed=params["seed"], blank_images=params.get("blank_images", False),
                size=WorldSize(**params["size"]))


def _revision(entry: dict[str, Any], endpoint: str | None) -> tuple[str, str]:
    """The recorded commit; if the Hub no longer has it (history rewritten), the recorded branch, with a note."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    from llava.hub_endpoint import resolve_endpoint

    commit, branch = entry.get("commit"), entry.get("revision") or "main"
    if not commit:
        return branch, f"no commit recorded: prepared from {branch}"
    try:
        HfApi(endpoint=resolve_endpoint(endpoint)).repo_info(entry["repo_id"], repo_type="dataset", revision=commit)
    except RevisionNotFoundError:
        return branch, (f"recorded commit {commit[:12]} is gone from {entry['repo_id']} (history rewritten): "
                        f"prepared from {branch}")
    return commit, ""


def _prepare_dataset(entry: dict[str, Any], record: LoadedRecord, layout: VolumeLayout, endpoint: str | None,
                     say) -> str:
    from llava.prepare.prepare_data import DataOptions, prepare_data

    folder = layout.resolve(entry["path"]).parent
    if _manifest(folder) is not None:
        say(f"prepare: {folder} is already prepared (reused)")
        return ""
    if not entry.get("repo_id") or not entry.get("stage"):
        raise KitError(f"{folder}: the recorded run trained on its own data ({entry['path']}), which is not on "
                       "the Hub; put the same files there (`llava-kit prepare verify`) and rerun")
    index = record.file((entry.get("subset") or {}).get("file"))
    revision, note = _revision(entry, endpoint)
    say(f"prepare: {entry['repo_id']} at {revision} -> {folder}" + (f" ({note})" if note else ""))
    # the same ids even from a changed source: the per-sample digests then say which samples changed
    prepare_data(DataOptions(stage=entry["stage"], out=folder, downloads=layout.datasets / ".downloads",
                             endpoint=endpoint, revision=revision, from_index=index, source_may_differ=True))
    return note


def _prepare_model(entry: dict[str, Any], layout: VolumeLayout, endpoint: str | None, say) -> None:
    from llava.prepare.models import load_sources, prepare_model

    folder = layout.resolve(entry["path"])
    if _manifest(folder) is not None:
        return
    if not entry.get("repo_id"):
        raise KitError(f"{folder}: the recorded model {entry['path']} has no Hub origin; put it there and rerun")
    known = {source.repo_id: source for source in load_sources()}
    if entry["repo_id"] not in known:
        raise KitError(f"{folder}: {entry['repo_id']} is not in llava/prepare/model_sources.yaml; add it there "
                       "(which files to fetch) and rerun")
    source = known[entry["repo_id"]].model_copy(update={"name": folder.name,
                                                         "revision": entry.get("commit") or entry.get("revision")})
    say(f"prepare: {entry['repo_id']} at commit {source.revision} -> {folder}")
    prepare_model(source, folder.parent, endpoint=endpoint)


def prepare_inputs(record: LoadedRecord, layout: VolumeLayout, stages: list[str], endpoint: str | None,
                   say=print) -> dict[str, str]:
    """Prepare what `stages` read; returns stage -> a note on how its data was prepared, where it matters."""
    params = world_params(record.body)
    if params is not None:
        _prepare_world(params, layout, say)
        return {}
    notes = {}
    for name in stages:
        stage = record.stage(name)
        for model in (stage.get("models") or {}).values():
            if model:
                _prepare_model(model, layout, endpoint, say)
        if stage.get("dataset"):
            notes[name] = _prepare_dataset(stage["dataset"], record, layout, endpoint, say)
    return notes


def check_inputs(record: LoadedRecord, layout: VolumeLayout, stages: list[str],
                 notes: dict[str, str] | None = None) -> list[DataCheck]:
    """Each stage's prepared data against the record's per-sample digests (the subset ids included)."""
    notes, checks = notes or {}, []
    for name in stages:
        entry = record.stage(name).get("dataset")
        if not entry:
            continue
        world = entry.get("world")
        label = entry.get("repo_id") or (f"shapes world, seed {world['seed']}: {entry['path']}" if world
                                         else entry["path"])
        digests_file = record.file((entry.get("sample_digests") or {}).get("file"))
        if digests_file is None:
            checks.append(DataCheck(name, label, None, note="the record holds no per-sample digests"))
            continue
        recorded = json.loads(digests_file.read_text())
        found = sample_digests(layout.resolve(entry["path"]), layout.resolve(entry.get("image_folder") or "."))
        first = first_difference(recorded, found)
        note = "" if first is None else (f"{len(recorded)} recorded samples, {len(found)} here; first differing "
                                         f"sample {first}")
        checks.append(DataCheck(name, label, first is None, first, "; ".join(filter(None, (notes.get(name), note)))))
    return checks
