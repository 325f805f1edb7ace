"""Steps in order: `llava-kit smoke` runs the whole kit on the tiny shapes world.

Knows the volume layout; the steps themselves live in their feature packages.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

from llava.durable import write_text
from llava.errors import KitError
from llava.markdown import markdown_table
from llava.packaged import SUITES_DIR
from llava.paths import VolumeLayout

SMOKE_STAGES = ("stage1", "stage1_5", "stage2")
SMOKE_SUITE = SUITES_DIR / "shapes_smoke.yaml"
# What smoke needs beyond the core install: transformers' Trainer needs accelerate, the chart matplotlib.
SMOKE_EXTRAS = {"accelerate": "train", "matplotlib": "eval"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules marks it as not importable
        return False


def require_smoke_extras() -> None:
    """A plain `pip install .` lacks them: say which extras to add instead of failing inside a stage."""
    missing = sorted({extra for module, extra in SMOKE_EXTRAS.items() if not _importable(module)})
    if missing:
        raise KitError(f"llava-kit smoke trains and evaluates, which needs the {' and '.join(missing)} "
                       f"extra(s): pip install 'llava-kit[train,eval]' (from a checkout: pip install '.[train,eval]')")


def smoke_layout(out: Path) -> VolumeLayout:
    return VolumeLayout(models=out / "models", datasets=out / "datasets", checkpoints=out / "checkpoints",
                        runs=out / "runs", hf_cache=out / "hf-cache")


def run_smoke(out: str | Path = "runs/smoke", *, seed: int = 0, blank_images: bool = False,
              world_size=None) -> dict:
    """World -> three stages -> builtin MMBench-style eval -> report.md + report.json in `out`."""
    require_smoke_extras()
    from llava.evaluate.service import run_eval
    from llava.recipe import STAGES_DIR, load_recipe
    from llava.synthetic.world import WorldSize, build_world, held_out_tsv
    from llava.train.console import print_header, stage_console
    from llava.train.run import train_stage

    out = Path(out)
    layout = smoke_layout(out)
    started = time.time()
    shutil.rmtree(out / "eval", ignore_errors=True)  # answers of an earlier smoke run are not this model's
    with stage_console(out / "world.log") as log_path:
        print_header(f"world: the synthetic shapes world (seed {seed}{', blank images' if blank_images else ''})",
                     out, log_path)
        build_world(out, seed=seed, blank_images=blank_images, size=world_size or WorldSize())
    stages = []
    for name in SMOKE_STAGES:
        t0 = time.time()
        # the world was just rebuilt, so resumable state from an earlier smoke run no longer applies
        shutil.rmtree(layout.runs / name, ignore_errors=True)
        recipe = load_recipe(STAGES_DIR / "smoke" / f"{name}.yaml", [f"training.seed={seed}"])
        result = train_stage(recipe, layout, run_dir=layout.runs / name)
        stages.append({"stage": name, "train_loss": result.train_loss, "steps": result.global_steps,
                       "skipped": result.skipped, "seconds": round(time.time() - t0, 1)})
    with stage_console(out / "eval.log") as log_path:
        print_header(f"eval (builtin MMBench scorer, {SMOKE_SUITE.name})", out / "eval", log_path)
        results = run_eval(layout.checkpoints / "stage2", SMOKE_SUITE, backend="builtin",
                           out_dir=out / "eval", tsv=held_out_tsv(out))
    overall = next(row["value"] for row in results["rows"] if row["name"] == "Overall")
    report = {"stages": stages, "colour_accuracy": overall, "questions": results["n_questions"],
              "blank_images": blank_images, "seed": seed, "seconds": round(time.time() - started, 1)}
    write_report(out, report)
    return report


def write_report(out: Path, report: dict) -> None:
    write_text(out / "report.json", json.dumps(report, indent=2))
    lines = ["# llava-kit smoke run", "",
             f"Tiny model, synthetic shapes world (seed {report['seed']}"
             + (", blank images: negative control" if report["blank_images"] else "") + ").", ""]
    lines += markdown_table(["stage", "train loss", "steps", "skipped", "seconds"],
                            [(s["stage"], f"{s['train_loss']:.4f}", s["steps"], s["skipped"], s["seconds"])
                             for s in report["stages"]])
    lines += ["", f"Colour accuracy: **{report['colour_accuracy']:.3f}** on {report['questions']} held-out "
              f"questions (builtin MMBench scorer; chart and table in eval/).", "",
              f"Total time: {report['seconds']} s."]
    write_text(out / "report.md", "\n".join(lines) + "\n")


def register(subparsers) -> None:
    parser = subparsers.add_parser("smoke", help="run the whole pipeline on the tiny shapes world (CPU, minutes)")
    parser.add_argument("--out", default="runs/smoke", help="folder for the world, checkpoints and report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blank-images", action="store_true", help="negative control: shapes removed from images")
    parser.set_defaults(func=lambda args: _print(run_smoke(args.out, seed=args.seed, blank_images=args.blank_images), args.out))


def _print(report: dict, out: str) -> int:
    print()
    for stage in report["stages"]:
        print(f"{stage['stage']:9s} loss {stage['train_loss']:.4f}  steps {stage['steps']}  {stage['seconds']} s"
              f"  -> {out}/checkpoints/{stage['stage']}")
    print(f"colour accuracy {report['colour_accuracy']:.3f} on {report['questions']} questions "
          f"-> {out}/report.md ({report['seconds']} s)")
    print(f"logs: {out}/runs/<stage>/train.log, {out}/world.log, {out}/eval.log; "
          f"TensorBoard: tensorboard --logdir {out}/runs")
    return 0
