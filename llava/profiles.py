"""Speed profiles as data: stages/profiles/<name>.yaml holds recipe overrides, for all stages and per stage.

A profile is applied after the recipe and its `--set` overrides, and it never changes the global batch:
when it sets `training.per_device_batch`, `training.grad_accum` is rescaled to keep
per_device_batch x grad_accum. Imports only the core, so `llava-kit train --profile` can use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from llava.errors import KitError
from llava.packaged import STAGES_DIR, packaged_path
from llava.recipe import Recipe, _apply_override, describe_errors

PROFILES_DIR = STAGES_DIR / "profiles"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    all: dict[str, Any] = {}
    stages: dict[str, dict[str, Any]] = {}
    source: str = ""

    def overrides_for(self, stage: str) -> dict[str, Any]:
        return {**self.all, **self.stages.get(stage, {})}


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    path = packaged_path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise KitError(f"speed profile {str(name_or_path)!r} not found ({path}); known profiles: {known_profiles()}")
    try:
        body = yaml.safe_load(path.read_text()) or {}
        return Profile(name=path.stem, source=str(path), **body)
    except yaml.YAMLError as err:
        raise KitError(f"{path}: not valid YAML: {err}") from err
    except ValidationError as err:
        raise KitError(f"{path}: invalid profile:\n{describe_errors(err, Profile)}") from err


def _rescaled_accumulation(recipe: Recipe, overrides: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Add the grad_accum that keeps per_device_batch x grad_accum when the profile changes the batch."""
    new_batch = overrides.get("training.per_device_batch")
    if new_batch is None or "training.grad_accum" in overrides:
        return overrides
    per_step = recipe.training.per_device_batch * recipe.training.grad_accum
    if not isinstance(new_batch, int) or new_batch <= 0 or per_step % new_batch:
        raise KitError(f"{profile.source}: training.per_device_batch {new_batch!r} does not divide the "
                       f"{per_step} samples per step of {recipe.source}; pick a divisor of {per_step}")
    return {**overrides, "training.grad_accum": per_step // new_batch}


def apply_profile(recipe: Recipe, name_or_path: str | Path | None) -> Recipe:
    """The recipe with the profile's overrides for its stage (`recipe.name`), validated again."""
    if not name_or_path:
        return recipe
    profile = load_profile(name_or_path)
    overrides = _rescaled_accumulation(recipe, profile.overrides_for(recipe.name), profile)
    body = recipe.model_dump(mode="json")
    for key, value in overrides.items():
        _apply_override(body, key, value)
    body["profile"] = profile.name
    try:
        return Recipe(**body, source=recipe.source)
    except ValidationError as err:
        raise KitError(f"{profile.source} on {recipe.source}: invalid recipe after the profile:\n{describe_errors(err, Recipe)}") from err
