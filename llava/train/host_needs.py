"""Free disk and host RAM a training run needs, from figures measured at the real model's size.

`llava/resources/containers/host_needs.yaml` holds, per DeepSpeed profile, bytes per parameter that a run of the real 0.89B
model took on the host: peak RSS with nothing trainable but the projector (stage 1), and on disk the
model folder and one resumable checkpoint. What training more parameters adds (fp32 gradient, master
copy and two Adam moments) is DeepSpeed's own per-parameter figure, also in that file. A run's model
is sized from the safetensors headers of its inputs (nothing is loaded), so the same check serves the
tiny smoke model and the real one.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
from safetensors import safe_open

from llava.errors import KitError
from llava.model.tunable import TunableParts
from llava.packaged import RESOURCES
from llava.recipe import Recipe
from llava.typed_config import read_packaged

NEEDS_FILE = RESOURCES / "containers" / "host_needs.yaml"
GIB = 1024**3


@dataclass(frozen=True)
class ParameterCount:
    total: int
    trainable: int


@dataclass(frozen=True)
class HostNeeds:
    ram: int            # peak host RSS of the run
    model_folder: int   # the stage's output folder
    resumable: int      # one resumable checkpoint (weights + optimizer state)
    kept: int           # resumable checkpoints on disk at once while a new one is written

    @property
    def disk(self) -> int:
        return self.model_folder + self.resumable * self.kept


def count_parameters(model_dirs: dict[str, Path], tunable: TunableParts) -> ParameterCount:
    """Parameters stored in the inputs' safetensors files, and how many of them this recipe trains.

    A vision-tower folder's names get the `vision_tower.` part so the recipe's part rules apply to them."""
    total = trainable = 0
    for role, folder in model_dirs.items():
        prefix = "vision_tower." if role == "vision_tower" else ""
        for path in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(path, "pt") as weights:
                for name in weights.keys():
                    shape = weights.get_slice(name).get_shape()
                    count = 1
                    for size in shape:
                        count *= size
                    total += count
                    trainable += count if tunable.trains(prefix + name) else 0
    return ParameterCount(total, trainable)


def host_needs(recipe: Recipe, params: ParameterCount) -> HostNeeds:
    table = read_packaged(NEEDS_FILE)
    profile = table["profiles"].get(recipe.deepspeed or "none", table["profiles"]["seed"])
    per_trainable = table["trainable_bytes_per_parameter"]
    return HostNeeds(
        ram=int(profile["peak_rss_bytes_per_parameter"] * params.total + per_trainable["ram"] * params.trainable),
        model_folder=int(table["model_folder_bytes_per_parameter"] * params.total),
        resumable=int(profile["resumable_bytes_per_parameter"] * params.total
                      + per_trainable["resumable"] * params.trainable),
        kept=recipe.checkpointing.keep_last + 1,
    )


def _free_disk(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_host(recipe: Recipe, layout, model_dirs: dict[str, Path]) -> HostNeeds:
    """Refuse a run whose checkpoints cannot fit on disk; warn when the host's free RAM is short."""
    needs = host_needs(recipe, count_parameters(model_dirs, TunableParts(tuple(recipe.tunable_parts))))
    output, runs = layout.resolve(recipe.output), layout.runs
    same_disk = _anchor_device(output) == _anchor_device(runs)
    wanted = {output: needs.model_folder + (needs.resumable * needs.kept if same_disk else 0)}
    if not same_disk:
        wanted[runs] = needs.resumable * needs.kept
    for folder, need in wanted.items():
        free = _free_disk(folder)
        if free < need:
            raise KitError(
                f"{recipe.source}: this stage writes about {need / GIB:.1f} GiB under {folder} (model folder "
                f"{needs.model_folder / GIB:.1f} GiB, {needs.kept} resumable checkpoints of "
                f"{needs.resumable / GIB:.1f} GiB while one is written), but only {free / GIB:.1f} GiB are free: "
                "free space there, lower checkpointing.keep_last, or point LLAVA_KIT_CHECKPOINTS / LLAVA_KIT_RUNS "
                "at a bigger disk")
    available = psutil.virtual_memory().available
    if available < needs.ram:
        print(f"[llava-kit] WARNING: this stage peaked at about {needs.ram / GIB:.1f} GiB of host RAM when "
              f"measured ({recipe.deepspeed or 'no DeepSpeed'} profile), {available / GIB:.1f} GiB are "
              "available now: it may be killed for memory (docs/performance.md, 'Real size on CPU')",
              file=sys.stderr, flush=True)
    return needs


def _anchor_device(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return path.stat().st_dev
