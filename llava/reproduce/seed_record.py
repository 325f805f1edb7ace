"""The seed's own numbers as a record: its recipes (stages/), final losses and MMBench table.

The seed published no per-step losses, subset ids or package versions, so a reproduction of it is
compared on final losses and the MMBench rows only, within the band (never bit for bit).
"""

from __future__ import annotations

from typing import Any

from llava.packaged import SUITES_DIR
from llava.publish.provenance import load_facts
from llava.publish.run_record import FORMAT, describe
from llava.recipe import load_recipe

SEED_SUITE = "mmbench_dev_en.yaml"


def _dataset(recipe) -> dict[str, Any]:
    from llava.prepare.sources import load_sources

    stage_key, source = next((key, s) for key, s in load_sources().items() if s.dir == recipe.name)
    subset = source.subset.model_dump() if source.subset else None
    return {"path": recipe.data.path, "image_folder": recipe.data.image_folder, "stage": stage_key,
            "repo_id": source.hub.repo_id if source.hub else None, "commit": None,
            "revision": source.hub.revision if source.hub else None, "description": source.description,
            "world": None, "subset": subset, "data_sha256": None, "samples": None}


def seed_record() -> dict[str, Any]:
    from llava.evaluate.suite import load_suite

    facts = load_facts()
    suite = load_suite(SUITES_DIR / SEED_SUITE)
    stages = []
    for name in facts["stage_order"]:
        recipe = load_recipe(name)
        seed = facts["seed"]["stages"][name]
        stages.append({
            "name": name, "recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe.content_hash(),
            "recipe_origin": f"stages/{name}.yaml (the seed's values)", "profile": "seed",
            "seed": recipe.training.seed, "metrics": {"train_loss": seed["train_loss"], "global_steps": seed["steps"]},
            "loss_history": [], "world_size": recipe.training.num_gpus, "device": "cuda", "versions": {},
            "image_digest": None, "git_commit": None,
            "models": {key: {"path": getattr(recipe.init, key), "repo_id": repo, "commit": None, "revision": "main",
                             "source": None, "seed": None}
                       for key, repo in zip(("llm", "vision_tower"), facts["base_model"]) if getattr(recipe.init, key)},
            "init_checkpoint": recipe.init.from_checkpoint, "dataset": _dataset(recipe),
        })
    rows = suite.references["seed"].rows
    record = {
        "format": FORMAT, "kind": "seed numbers",
        "environment": {"versions": {}, "image_digest": None, "git_commit": None,
                        "world_size": max(s["world_size"] for s in stages), "device": "cuda", "profile": "seed"},
        "stages": stages, "seeds": {s["name"]: s["seed"] for s in stages},
        "eval": {"suite": suite.name, "dataset": suite.dataset, "split": suite.split, "backend": "vlmevalkit",
                 "judge": suite.judge, "n_questions": None, "rows": [{"name": k, "value": v} for k, v in rows.items()],
                 "suite_file": None, "tsv": None, "packaged_suite": SEED_SUITE},
    }
    record["what"] = describe(record, facts)
    record["what"]["description"] = (
        f"The seed reproduction [{facts['seed']['model']}](https://huggingface.co/{facts['seed']['model']}) "
        f"(LLaVA-NeXT's scripts, {' + '.join(facts['base_model'])}), re-run with llava-kit's recipe of record "
        "(stages/*.yaml) and held to the seed's final losses and MMBench_DEV_EN table.")
    return record
