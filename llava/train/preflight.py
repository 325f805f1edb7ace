"""Checks that run before any weights load: inputs exist with manifests, the length budget holds, and the
host has the disk (and, with a warning, the RAM) the run was measured to need."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llava.data.dataset import load_records
from llava.data.images import image_pipeline
from llava.errors import KitError
from llava.manifest import MANIFEST_NAME, manifest_hash, require_manifest
from llava.model.checkpoint import CHECKPOINT_KIND
from llava.owned import refuse_overlap, require_replaceable
from llava.data.processor import recipe_processor
from llava.recipe import Recipe

TEXT_MARGIN = 512  # tokens of text a sample must still fit beside its largest image


@dataclass
class Inputs:
    data_file: Path
    image_folder: Path
    model_dirs: dict[str, Path]
    records: list[dict] = field(default_factory=list)  # data.path, read and checked before any weights load

    def paths(self) -> dict[str, Path]:
        """Every path the run reads: an output may not be, contain or sit inside one of them."""
        dataset = {"dataset folder": self.data_file.parent} if (self.data_file.parent / MANIFEST_NAME).is_file() else {}
        models = {f"init.{'from_checkpoint' if name == 'checkpoint' else name}": path
                  for name, path in self.model_dirs.items()}
        return {"data.path": self.data_file, **dataset, "data.image_folder": self.image_folder, **models}

    def manifest_hashes(self) -> dict[str, str]:
        folders = {"data": self.data_file.parent, **self.model_dirs}
        return {name: manifest_hash(folder) for name, folder in folders.items() if (folder / "manifest.json").is_file()}


def _exists(path: Path, what: str, recipe: Recipe, key: str) -> Path:
    if not path.exists():
        raise KitError(f"{recipe.source}: {key} points to {path}, which does not exist ({what})")
    return path


def locate_inputs(recipe: Recipe, layout) -> Inputs:
    data_file = _exists(layout.resolve(recipe.data.path), "the LLaVA JSON file", recipe, "data.path")
    image_folder = _exists(layout.resolve(recipe.data.image_folder), "the image folder", recipe, "data.image_folder")
    if recipe.init.from_checkpoint:
        dirs = {"checkpoint": _exists(layout.resolve(recipe.init.from_checkpoint),
                                      "run the previous stage first", recipe, "init.from_checkpoint")}
    else:
        dirs = {"llm": _exists(layout.resolve(recipe.init.llm), "run `llava-kit prepare models`", recipe, "init.llm"),
                "vision_tower": _exists(layout.resolve(recipe.init.vision_tower), "run `llava-kit prepare models`",
                                        recipe, "init.vision_tower")}
    return Inputs(data_file, image_folder, dirs)


def check_manifests(recipe: Recipe, inputs: Inputs) -> None:
    if recipe.data.require_manifest:
        dataset = require_manifest(inputs.data_file.parent, "dataset")
        verified = dataset.get("extra", {}).get("verified_file", inputs.data_file.name)
        if verified != inputs.data_file.name:
            raise KitError(f"{recipe.source}: data.path is {inputs.data_file}, but `prepare verify` quarantined samples "
                           f"of it ({inputs.data_file.parent / 'quarantine.jsonl'}) and wrote the ones that passed to "
                           f"{inputs.data_file.parent / verified}: train on that (--set data.path=...), or fix the "
                           "file and verify again")
    # every listed file is hashed again (seconds for a 0.5B model): a weight file changed or truncated
    # after its manifest was written must stop the stage here, not hours later
    for name, folder in inputs.model_dirs.items():
        require_manifest(folder, "checkpoint" if name == "checkpoint" else "model")


def max_image_tokens(recipe: Recipe, layout) -> int:
    return image_pipeline(recipe.model.image_mode, recipe_processor(recipe, layout)).max_tokens()


def check_length_budget(recipe: Recipe, layout) -> int:
    largest = max_image_tokens(recipe, layout)
    need = largest + TEXT_MARGIN
    if recipe.training.model_max_length < need:
        raise KitError(
            f"{recipe.source}: training.model_max_length is {recipe.training.model_max_length}, but one image can "
            f"become {largest} tokens in this stage ({recipe.model.image_mode}); with {TEXT_MARGIN} tokens of text "
            f"that needs at least {need}: raise training.model_max_length (the seed uses 32768 from stage 1.5 on)")
    return largest


def check_output(recipe: Recipe, layout, inputs: Inputs) -> None:
    """The stage output may replace only an earlier output of a stage, and never touch an input."""
    what = f"{recipe.source}: output"
    output = layout.resolve(recipe.output)
    refuse_overlap(output, inputs.paths(), what)
    require_replaceable(output, CHECKPOINT_KIND, what)


def preflight(recipe: Recipe, layout) -> Inputs:
    from llava.train.host_needs import check_host

    inputs = locate_inputs(recipe, layout)
    check_output(recipe, layout, inputs)
    inputs.records = load_records(inputs.data_file)
    check_manifests(recipe, inputs)
    check_length_budget(recipe, layout)
    check_host(recipe, layout, inputs.model_dirs)
    return inputs
