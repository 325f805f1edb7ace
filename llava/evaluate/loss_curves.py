"""Training-loss curves of a checkpoint's stages, read from their manifests, for the eval and smoke reports.

A stage's curve is marked with the seed's final loss only when that stage ran the seed's recipe (its
manifest's recipe hash equals stages/<stage>.yaml's); a tiny or changed recipe has no seed number to meet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llava.errors import KitError
from llava.evaluate.chart import write_loss_chart
from llava.manifest import read_manifest

STAGE_ORDER = ("stage1", "stage1_5", "stage2")


def seed_loss(stage: str, recipe_hash: str | None) -> float | None:
    """The seed's final loss for `stage`, if `recipe_hash` is the hash of the seed's recipe for it."""
    from llava.publish.provenance import seed_loss_for

    return seed_loss_for(stage, recipe_hash)


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder) if (folder / "manifest.json").is_file() else None
    except KitError:
        return None


def _lineage(checkpoint: Path) -> list[tuple[str, Path, dict[str, Any] | None]]:
    """(stage, folder, manifest) of this checkpoint's stage and the earlier stages beside it (checkpoints/stage1, ...)."""
    checkpoint = Path(checkpoint)
    manifest = _manifest(checkpoint) or {}
    stage = manifest.get("extra", {}).get("stage")
    names = list(STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]) if stage in STAGE_ORDER else [stage or checkpoint.name]
    folders = [checkpoint if name == names[-1] else checkpoint.parent / name for name in names]
    return [(name, folder, manifest if folder == checkpoint else _manifest(folder))
            for name, folder in zip(names, folders)]


def unlogged_stages(checkpoint: Path) -> list[str]:
    """Why a stage that trained has no curve: fewer steps than its logging_steps, so no loss was logged."""
    notes = []
    for name, folder, found in _lineage(checkpoint):
        if not found or found.get("extra", {}).get("loss_history"):
            continue
        steps = found.get("metrics", {}).get("global_steps")
        every = found.get("extra", {}).get("recipe", {}).get("training", {}).get("logging_steps")
        loss = found.get("metrics", {}).get("train_loss")
        if steps and loss is not None:
            notes.append(f"{name} has no loss curve: it trained {steps} steps and logs the loss every "
                         f"{every} (training.logging_steps), so none was logged; its mean loss was {loss:.4f} "
                         f"({folder / 'manifest.json'})")
    return notes


def lineage_curves(checkpoint: Path) -> list[dict[str, Any]]:
    """This checkpoint's stage and the earlier stages beside it, with loss histories."""
    curves = []
    for name, folder, found in _lineage(checkpoint):
        history = (found or {}).get("extra", {}).get("loss_history") or []
        if history:
            curves.append({"stage": name, "steps": [s for s, _ in history], "losses": [v for _, v in history],
                           "seed_loss": seed_loss(name, found.get("recipe_hash")), "checkpoint": str(folder.resolve())})
    return curves


def write_lineage_chart(checkpoint: Path, path: Path, title: str) -> Path | None:
    """loss.png for the checkpoint's stages, or None when no stage recorded a loss history."""
    curves = lineage_curves(checkpoint)
    return write_loss_chart(curves, path, title) if curves else None
