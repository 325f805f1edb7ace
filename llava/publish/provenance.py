"""What the card says about how the model was made: each stage's recipe, final loss and data.

Read from the stage checkpoints' manifests (siblings of the published one: checkpoints/stage1, ...),
the recipes in stages/, and the dataset folders' manifests and subset_index.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


from llava.errors import KitError
from llava.manifest import read_manifest
from llava.paths import VolumeLayout
from llava.recipe import STAGES_DIR, load_recipe
from llava.typed_config import read_packaged

FACTS_RESOURCE = "card_facts.yaml"
SUBSET_INDEX = "subset_index.json"


def load_facts() -> dict[str, Any]:
    return read_packaged(resources.files("llava.publish").joinpath(FACTS_RESOURCE))


def seed_loss_for(stage: str, recipe_hash: str | None) -> float | None:
    """The seed's final loss for `stage`, if `recipe_hash` is the hash of the seed's recipe for it."""
    path = STAGES_DIR / f"{stage}.yaml"
    if recipe_hash is None or not path.is_file() or load_recipe(path).content_hash() != recipe_hash:
        return None
    return load_facts()["seed"]["stages"].get(stage, {}).get("train_loss")


@dataclass
class DatasetRecord:
    folder: Path
    repo_id: str | None = None
    commit: str | None = None
    description: str | None = None
    samples: int | None = None
    subset: dict[str, Any] | None = None  # subset_index.json minus the id list
    subset_file: Path | None = None
    licence: str = ""


@dataclass
class StageRecord:
    name: str
    folder: Path | None
    train_loss: float | None = None
    steps: int | None = None
    seed_loss: float | None = None
    recipe: dict[str, Any] | None = None
    recipe_origin: str = "not found"
    dataset: DatasetRecord | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


def stage_name(checkpoint: Path, manifest: dict[str, Any], order: list[str]) -> str | None:
    extra = manifest.get("extra", {})
    for candidate in (extra.get("stage"), extra.get("recipe_name"), checkpoint.name):
        if candidate in order:
            return candidate
    return None


def collect_stages(checkpoint: Path, manifest: dict[str, Any], layout: VolumeLayout,
                   facts: dict[str, Any]) -> list[StageRecord]:
    """The published stage and the stages before it, in training order.

    A checkpoint that is not one of the known stages (by manifest extra.stage or folder name) is
    described on its own, without earlier stages or seed numbers.
    """
    order = facts["stage_order"]
    last = stage_name(checkpoint, manifest, order)
    if last is None:
        return [_stage_record(checkpoint.name, checkpoint, manifest, layout, facts)]
    records = []
    for name in order[: order.index(last) + 1]:
        folder = checkpoint if name == last else checkpoint.parent / name
        stage_manifest = manifest if name == last else _manifest_or_none(folder)
        records.append(_stage_record(name, folder if stage_manifest else None, stage_manifest or {}, layout, facts))
    return records


def _manifest_or_none(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder) if folder.is_dir() else None
    except KitError:
        return None


def _stage_record(name: str, folder: Path | None, manifest: dict[str, Any], layout: VolumeLayout,
                  facts: dict[str, Any]) -> StageRecord:
    metrics = manifest.get("metrics", {})
    recipe, origin = find_recipe(name, manifest)
    record = StageRecord(
        name=name, folder=folder, train_loss=metrics.get("train_loss"),
        steps=metrics.get("steps", metrics.get("global_steps")),
        seed_loss=seed_loss_for(name, manifest.get("recipe_hash")),  # only a stage that ran the seed's recipe
        recipe=recipe, recipe_origin=origin, manifest=manifest,
    )
    if recipe and recipe.get("data", {}).get("path"):
        record.dataset = read_dataset(layout.resolve(recipe["data"]["path"]).parent, facts)
    return record


def find_recipe(name: str, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The recipe a stage trained with: recorded in its manifest, else a stages/ file whose hash matches."""
    recorded = manifest.get("extra", {}).get("recipe")
    if isinstance(recorded, dict):
        return recorded, "recorded in the checkpoint manifest"
    wanted = manifest.get("recipe_hash")
    candidates = [Path(recorded)] if isinstance(recorded, str) else []
    candidates += [STAGES_DIR / f"{name}.yaml", STAGES_DIR / "smoke" / f"{name}.yaml"]
    loaded = []
    for path in candidates:
        try:
            recipe = load_recipe(path)
        except KitError:
            continue
        if wanted and recipe.content_hash() == wanted:
            return recipe.model_dump(mode="json"), f"{_short(path)} (hash matches the manifest)"
        loaded.append((path, recipe))
    if loaded:
        path, recipe = loaded[0]
        return recipe.model_dump(mode="json"), f"{_short(path)} (not verified: the manifest's recipe hash differs or is missing)"
    return None, "not found"


def _short(path: Path) -> str:
    try:
        return path.resolve().relative_to(STAGES_DIR.parent).as_posix()
    except ValueError:
        return str(path)


def read_dataset(folder: Path, facts: dict[str, Any]) -> DatasetRecord | None:
    manifest = _manifest_or_none(folder)
    if manifest is None:
        return None
    extra = manifest.get("extra", {})
    hub = extra.get("hub") if isinstance(extra.get("hub"), dict) else {}
    repo_id = extra.get("repo_id") or hub.get("repo_id")
    record = DatasetRecord(
        folder=folder, repo_id=repo_id, commit=extra.get("commit") or hub.get("commit"),
        description=extra.get("description") or extra.get("source"),
        samples=extra.get("samples", extra.get("records")),
        licence=facts["dataset_licences"].get(repo_id, facts["unknown_dataset_licence"]) if repo_id
        else facts["unknown_dataset_licence"],
    )
    index = folder / SUBSET_INDEX
    if index.is_file():
        body = json.loads(index.read_text())
        record.subset = {key: value for key, value in body.items() if key != "ids"}
        record.subset.setdefault("size", len(body.get("ids", [])))
        record.subset_file = index
    return record


def dotted(recipe: dict[str, Any] | None, key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
