"""Speed profiles as data: stages/profiles/<name>.yaml holds recipe overrides, for all stages and per stage.

A profile is applied after the recipe and its `--set` overrides, and it never changes the global batch:
when it sets `training.per_device_batch`, `training.grad_accum` is rescaled to keep
per_device_batch x grad_accum. Imports only the core, so `llava-kit train --profile` can use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from llava.errors import KitError
from llava.packaged import STAGES_DIR, packaged_path
from llava.recipe import Recipe
from llava.typed_config import config_error, load_config, set_dotted

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
    missing = f"speed profile {str(name_or_path)!r} not found ({path}); known profiles: {known_profiles()}"
    return load_config(Profile, path, "speed profile", missing, name=path.stem, source=str(path))


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
        set_dotted(body, key, value, str(profile.source))
    body["profile"] = profile.name
    try:
        return Recipe(**body, source=recipe.source)
    except ValidationError as err:
        raise config_error(err, profile.source, Recipe,
                           header=f"{profile.source} on {recipe.source}: invalid recipe after the profile") from None
