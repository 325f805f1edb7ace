"""A publishable run on disk, tiny: three stage checkpoints, dataset folders, an eval result.

The model is a real random-initialised LlavaOnevision built with the kit's own helpers (llava.synthetic
and llava.model); the eval result follows contracts.md's results.json layout.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from llava.manifest import weights_sha256, write_manifest

LOSSES = {"stage1": 3.125, "stage1_5": 1.25, "stage2": 0.8125}
ROWS = [("Overall", 0.5, 0.5420962199312714, 0.5506872852233677),
        ("AR", 0.625, 0.6331658291457286, 0.5979899497487438),
        ("CP", 0.375, 0.6554054054054054, 0.6959459459459459)]
VLMEVALKIT_COMMIT = "354a485c5a9e4a69a96cdf9d8dd8457e4f765116"


@dataclass(frozen=True)
class World:
    root: Path
    checkpoint: Path
    results: Path
    weights_sha: str

    def env(self) -> dict[str, str]:
        """Volume variables that make VolumeLayout.from_env() point into this world."""
        return {"LLAVA_KIT_HOME": str(self.root), "LLAVA_KIT_RUNS": str(self.root / "runs"),
                "LLAVA_KIT_DATASETS": str(self.root / "datasets"),
                "LLAVA_KIT_CHECKPOINTS": str(self.root / "checkpoints")}


def _tiny_checkpoint(root: Path) -> Path:
    from llava.model.build import assemble_from_parts
    from llava.model.checkpoint import save_checkpoint
    from llava.recipe import load_recipe
    from llava.synthetic.instruct_llm import copy_instruct_llm
    from llava.synthetic.tiny_models import write_tiny_vision

    # the shipped tiny instruct LLM: it answers in words, which the publish gate requires (a random
    # tiny LLM answers only newlines, an empty answer)
    copy_instruct_llm(root / "models" / "llm")
    write_tiny_vision(root / "models" / "vision")
    recipe = load_recipe("stage1", [f"init.llm={root / 'models' / 'llm'}",
                                    f"init.vision_tower={root / 'models' / 'vision'}",
                                    "model.vision_layers=2", "model.image_token_index=null"])
    built = assemble_from_parts(recipe, root / "models" / "llm", root / "models" / "vision")
    return save_checkpoint(built, root / "checkpoints" / "stage2")


def _model_pins(root: Path) -> None:
    """The base models as `prepare models` records them (where stages/stage1.yaml looks for them)."""
    from llava.recipe import load_recipe

    init = load_recipe("stage1").init
    for placeholder, repo_id in ((init.llm, "Qwen/Qwen2.5-0.5B-Instruct"),
                                 (init.vision_tower, "google/siglip-so400m-patch14-384")):
        folder = root / "models" / placeholder.split("/", 1)[1]
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        write_manifest(folder, "model", extra={"repo_id": repo_id, "revision": "main", "commit": "e" * 40})


def _datasets(root: Path) -> None:
    for stage, repo_id in (("stage1", "liuhaotian/LLaVA-Pretrain"), ("stage1_5", "lmms-lab/LLaVA-ReCap-118K"),
                           ("stage2", "liuhaotian/LLaVA-Instruct-150K")):
        folder = root / "datasets" / stage
        folder.mkdir(parents=True)
        (folder / "data.json").write_text("[]")
        if stage != "stage1":
            ids = [f"{stage}-{i}" for i in range(5)]
            (folder / "subset_index.json").write_text(json.dumps(
                {"method": "sha256-rank-v1", "seed": 0, "size": len(ids), "source_sha256": "ab" * 32,
                 "ids_sha256": "cd" * 32, "ids": ids}))
        write_manifest(folder, "dataset", file_patterns=("data.json",),
                       extra={"repo_id": repo_id, "commit": "f" * 40, "samples": 5})


def _stage_manifests(root: Path, stage2: Path) -> None:
    from llava.recipe import load_recipe

    for stage in ("stage1", "stage1_5"):
        folder = root / "checkpoints" / stage
        shutil.copytree(stage2, folder)
        (folder / "manifest.json").unlink(missing_ok=True)
    for stage in ("stage1", "stage1_5", "stage2"):
        recipe = load_recipe(stage)
        folder = root / "checkpoints" / stage
        extra = {"stage": stage}
        if stage != "stage1":  # stage1 leaves the recipe out: the card must find it by hash in stages/
            extra["recipe"] = recipe.model_dump(mode="json")
        write_manifest(folder, "checkpoint", recipe_hash=recipe.content_hash(),
                       metrics={"train_loss": LOSSES[stage], "steps": 12}, extra=extra)


def write_results(path: Path, weights_sha: str, overall: float = ROWS[0][1], created: str = "2026-11-26T10:00:00Z",
                  backend: str = "vlmevalkit") -> Path:
    rows = [{"name": name, "value": overall if name == "Overall" else value, "seed": seed, "official": official,
             "delta_seed": (overall if name == "Overall" else value) - seed,
             "delta_official": (overall if name == "Overall" else value) - official}
            for name, value, seed, official in ROWS]
    body = {"suite": "mmbench_dev_en", "dataset": "MMBench_DEV_EN", "backend": backend, "judge": "exact_matching",
            "vlmevalkit_commit": VLMEVALKIT_COMMIT if backend == "vlmevalkit" else None,
            "checkpoint": "checkpoints/stage2",
            "weights_sha256": weights_sha, "split": "dev", "rows": rows, "n_questions": 1164, "created": created}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2))
    return path


def _chart(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 120, 200)).save(path)


def build_world(root: Path) -> World:
    checkpoint = _tiny_checkpoint(root)
    _model_pins(root)
    _datasets(root)
    _stage_manifests(root, checkpoint)
    sha = weights_sha256(checkpoint)
    results = write_results(root / "runs" / "repro" / "eval" / "results.json", sha)
    _chart(results.parent / "chart.png")
    (results.parent / "table.md").write_text("# table\n")
    return World(root, checkpoint, results, sha)
