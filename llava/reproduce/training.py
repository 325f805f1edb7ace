"""Train one recorded stage with its recorded recipe (resumable: train_stage resumes by itself)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llava.errors import KitError
from llava.paths import VolumeLayout
from llava.reproduce.record import LoadedRecord


@dataclass
class StageRun:
    name: str
    loss_history: list[list[float]]
    train_loss: float | None
    reused: bool
    recipe_changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # key, as trained, as recorded


def _flatten(body: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        return {prefix: body}
    flat = {}
    for key, value in body.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def recipe_changes(stage: dict[str, Any], record: LoadedRecord) -> list[tuple[str, Any, Any]]:
    """Keys where the record's recipe differs from the one its training wrote into the stage manifest.

    An edited record is caught by the recipe hash the stage manifest holds; the manifest's own copy of
    the recipe then says which keys changed.
    """
    from llava.recipe import Recipe

    recorded = stage["recipe"]
    if stage.get("recipe_hash") is None or Recipe(**recorded).content_hash() == stage["recipe_hash"]:
        return []
    manifest_file = record.file(stage.get("manifest_file"))
    trained = json.loads(manifest_file.read_text()).get("extra", {}).get("recipe") if manifest_file else None
    if not isinstance(trained, dict):
        return [("(recipe)", "hash " + stage["recipe_hash"][:12], "another hash; no trained copy to compare with")]
    before, after = _flatten(trained), _flatten(recorded)
    return [(key, before.get(key), after.get(key)) for key in sorted(set(before) | set(after))
            if before.get(key) != after.get(key)]


def _finished(recipe, layout: VolumeLayout) -> dict[str, Any] | None:
    """The stage's checkpoint manifest when an earlier reproduction already trained this exact recipe."""
    from llava.manifest import read_manifest
    from llava.train.preflight import preflight

    folder = layout.resolve(recipe.output)
    if not (folder / "manifest.json").is_file():
        return None
    try:
        manifest = read_manifest(folder)
        same_inputs = manifest.get("inputs") == preflight(recipe, layout).manifest_hashes()
    except KitError:
        return None
    return manifest if manifest.get("recipe_hash") == recipe.content_hash() and same_inputs else None


def train_recorded(stage: dict[str, Any], record: LoadedRecord, layout: VolumeLayout,
                   profile: str | None) -> StageRun:
    from llava.profiles import apply_profile
    from llava.recipe import Recipe
    from llava.train.run import train_stage

    recipe = apply_profile(Recipe(**stage["recipe"], source=f"the record's {stage['name']} recipe"), profile)
    changes = recipe_changes(stage, record)
    manifest = _finished(recipe, layout)
    reused = manifest is not None
    if manifest is None:
        train_stage(recipe, layout, run_dir=layout.runs / stage["name"])
        manifest = json.loads((layout.resolve(recipe.output) / "manifest.json").read_text())
    return StageRun(stage["name"], manifest["extra"].get("loss_history") or [],
                    manifest["metrics"].get("train_loss"), reused, changes)
