"""Steps in order: `llava-kit smoke` runs the whole kit on the tiny shapes world.

Knows the volume layout; the steps themselves live in their feature packages.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import time
from pathlib import Path

from llava.durable import write_text
from llava.errors import KitError
from llava.markdown import markdown_table
from llava.owned import adopt_older_output, claim_folder
from llava.packaged import SUITES_DIR
from llava.paths import VolumeLayout

SMOKE_STAGES = ("stage1", "stage1_5", "stage2")
SMOKE_SUITE = SUITES_DIR / "shapes_smoke.yaml"
SMOKE_KIND = "smoke"  # the llava.owned kind of a smoke folder
# What smoke needs beyond the core install: transformers' Trainer needs accelerate, the chart matplotlib.
SMOKE_EXTRAS = {"accelerate": "train", "matplotlib": "eval"}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # sys.modules marks it as not importable
        return False


def require_smoke_extras(verb: str = "smoke") -> None:
    """A plain `pip install .` lacks them: say which extras to add instead of failing inside a stage."""
    missing = sorted({extra for module, extra in SMOKE_EXTRAS.items() if not _importable(module)})
    if missing:
        raise KitError(f"llava-kit {verb} trains and evaluates, which needs the {' and '.join(missing)} "
                       f"extra(s): pip install 'llava-kit[train,eval]' (from a checkout: pip install '.[train,eval]')")


def smoke_layout(out: Path) -> VolumeLayout:
    return VolumeLayout(models=out / "models", datasets=out / "datasets", checkpoints=out / "checkpoints",
                        runs=out / "runs", hf_cache=out / "hf-cache")


def run_smoke(out: str | Path = "runs/smoke", *, seed: int = 0, blank_images: bool = False,
              world_size=None, fixed_options: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """World -> three stages -> builtin MMBench-style eval -> report.md + report.json in `out`.

    By default the options are shuffled and scored circularly (the model must read them, as in MMBench);
    `fixed_options` keeps one order, where the letter follows from the colour alone. `overrides`
    (`key=value`) apply to every stage's recipe after the seed.
    """
    require_smoke_extras()
    from llava.evaluate.service import run_eval
    from llava.recipe import STAGES_DIR, load_recipe
    from llava.synthetic.world import WorldSize, build_world, held_out_tsv
    from llava.train.console import print_header, stage_console
    from llava.train.run import train_stage

    adopt_older_output(out, SMOKE_KIND, "world.log")
    out = claim_folder(out, SMOKE_KIND, what="smoke folder (--out)")  # it replaces its own files below
    layout = smoke_layout(out)
    started = time.time()
    shutil.rmtree(out / "eval", ignore_errors=True)  # answers of an earlier smoke run are not this model's
    with stage_console(out / "world.log") as log_path:
        print_header(f"world: the synthetic shapes world (seed {seed}{', blank images' if blank_images else ''})",
                     out, log_path)
        size = world_size or (WorldSize() if fixed_options else WorldSize.circular())
        build_world(out, seed=seed, blank_images=blank_images, size=size)
    stages = []
    for name in SMOKE_STAGES:
        t0 = time.time()
        # the world was just rebuilt, so resumable state from an earlier smoke run no longer applies
        shutil.rmtree(layout.runs / name, ignore_errors=True)
        recipe = load_recipe(STAGES_DIR / "smoke" / f"{name}.yaml", [f"training.seed={seed}", *overrides])
        result = train_stage(recipe, layout, run_dir=layout.runs / name)
        stages.append({"stage": name, "train_loss": result.train_loss, "steps": result.global_steps,
                       "skipped": result.skipped, "seconds": round(time.time() - t0, 1)})
    eval_started = time.time()
    with stage_console(out / "eval.log") as log_path:
        print_header(f"eval (builtin MMBench scorer, {SMOKE_SUITE.name})", out / "eval", log_path)
        results = run_eval(layout.checkpoints / "stage2", SMOKE_SUITE, backend="builtin",
                           out_dir=out / "eval", tsv=held_out_tsv(out))
        logging.getLogger(__name__).info("scored %d questions: %s; table, chart, predictions -> %s",
                                         results["n_questions"], ", ".join(f"{row['name']} {row['value']}"
                                                                          for row in results["rows"]), out / "eval")
    overall = next(row["value"] for row in results["rows"] if row["name"] == "Overall")
    passes = pass_accuracy(out / "eval" / "questions.csv")
    report = {"stages": stages, "colour_accuracy": overall, "circular": passes["rows"] > results["n_questions"],
              "questions": results["n_questions"], **passes, "chance": results.get("chance"),
              "blind_baseline": blind_baseline(held_out_tsv(out)),
              "blank_images": blank_images, "seed": seed, "eval_seconds": round(time.time() - eval_started, 1),
              "seconds": round(time.time() - started, 1)}
    write_report(out, report, layout)
    return report


def pass_accuracy(questions_csv: Path) -> dict:
    """Rows (rotated passes) answered right, beside the circular figure: how far from all-four-right it is."""
    import csv

    with open(questions_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    pairs = [(want, got) for row in rows for want, got in zip(row["answers"].split("|"), row["inferred"].split("|"))]
    return {"rows": len(pairs), "rows_right": sum(want == got for want, got in pairs)}


def blind_baseline(tsv: Path) -> float:
    """What a model that reads the options but cannot see names scores: the commonest answer colour's share.

    Circular scoring does not bring that to chance (always "green", read right in every rotation, wins on
    every green question), so it is the bound the blank-image control is held to, beside random letters.
    """
    from collections import Counter

    from llava.evaluate.mmbench_tsv import read_mmbench_tsv

    colours = {row.question_index: row.options[row.answer] for row in read_mmbench_tsv(tsv).rows}
    return round(max(Counter(colours.values()).values()) / len(colours), 4)


def write_report(out: Path, report: dict, layout: VolumeLayout) -> None:
    """report.json + report.md: stages, loss curves, circular accuracy against chance, every artifact's path."""
    from llava.evaluate.loss_curves import write_lineage_chart

    out = out.resolve()
    loss = write_lineage_chart(layout.checkpoints / "stage2", out / "loss.png", "smoke: training loss per stage")
    report["artifacts"] = smoke_artifacts(out, layout, loss)
    write_text(out / "report.json", json.dumps(report, indent=2))
    floor = "the blind baseline above" if report["circular"] else "chance"
    control = ("This run is the negative control: the shapes are removed from every image, so the colour "
               f"cannot be seen and accuracy must stay at {floor}." if report["blank_images"] else
               "Negative control: `llava-kit smoke --blank-images` (same world, shapes removed from the images) "
               f"stays at {floor}; tests/test_core_smoke.py asserts it.")
    llm = ("; the LLM is the shipped tiny instruct stand-in (llava/resources/tiny-instruct-qwen2), pretrained "
           "text-only to read MMBench options, as the real recipe starts from Qwen2.5-0.5B-Instruct"
           if report["circular"] else "; the LLM is a random tiny Qwen2")
    lines = ["# llava-kit smoke run", "",
             f"Tiny model, synthetic shapes world (seed {report['seed']}"
             + (", blank images: negative control" if report["blank_images"] else "") + f"){llm}.", ""]
    lines += markdown_table(["stage", "train loss", "steps", "skipped", "seconds"],
                            [(s["stage"], f"{s['train_loss']:.4f}", s["steps"], s["skipped"], s["seconds"])
                             for s in report["stages"]])
    if loss is not None:
        lines += ["", "![training loss per stage](loss.png)", "",
                  "Tiny recipes (stages/smoke/): no seed loss applies, so none is marked."]
    if report["circular"]:
        scoring = (f"circular: **{report['colour_accuracy']:.3f}** on {report['questions']} held-out questions, "
                   "options shuffled, each asked in 4 rotated orders (VLMEvalKit's; a question counts only if all 4 "
                   f"are right); {report['rows_right']}/{report['rows']} rotated rows right")
        blind = (f"; a model that reads the options but cannot see, always naming the commonest answer colour, "
                 f"scores {100 * report['blind_baseline']:.1f}% (the bound for the blank-image control)")
    else:
        scoring = (f"**{report['colour_accuracy']:.3f}** on {report['questions']} held-out questions, one pass, "
                   "options in one fixed order (A red, B green, C blue, D yellow: the letter follows from the "
                   "colour; the default smoke shuffles them and scores circularly)")
        blind = ""
    lines += ["", f"Colour accuracy, {scoring}. Builtin MMBench scorer.", "",
              f"Chance: {100 * (report['chance'] or 0):.2f}% for random letters{blind}.", "", control, "",
              f"Total time: {report['seconds']} s (eval {report['eval_seconds']} s).", "", "Files:"]
    lines += [f"- {name}: `{path}`" for name, path in report["artifacts"].items()]
    write_text(out / "report.md", "\n".join(lines) + "\n")


def smoke_artifacts(out: Path, layout: VolumeLayout, loss: Path | None) -> dict:
    """Absolute paths of what the smoke run leaves behind."""
    from llava.synthetic.world import held_out_tsv

    paths = {"report": out / "report.md", "report_json": out / "report.json", "loss_chart": loss,
             "eval_table": out / "eval" / "table.md", "eval_chart": out / "eval" / "chart.png",
             "eval_results": out / "eval" / "results.json", "predictions": out / "eval" / "predictions.jsonl",
             "verdicts": out / "eval" / "questions.csv", "test_tsv": held_out_tsv(out)}
    for name in SMOKE_STAGES:
        paths[f"checkpoint_{name}"] = layout.checkpoints / name
        paths[f"run_{name}"] = layout.runs / name
    return {name: str(Path(path).resolve()) for name, path in paths.items() if path is not None}


def register(subparsers) -> None:
    register_reproduce(subparsers)
    parser = subparsers.add_parser("smoke", help="run the whole pipeline on the tiny shapes world (CPU, minutes)")
    parser.add_argument("--out", default="runs/smoke", help="folder for the world, checkpoints and report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blank-images", action="store_true", help="negative control: shapes removed from images")
    parser.add_argument("--fixed-options", action="store_true",
                        help="options in one fixed order, one pass (default: shuffled, scored circularly)")
    parser.set_defaults(func=lambda args: _print(run_smoke(args.out, seed=args.seed, blank_images=args.blank_images,
                                                           fixed_options=args.fixed_options), args.out))


def _print(report: dict, out: str) -> int:
    print()
    for stage in report["stages"]:
        print(f"{stage['stage']:9s} loss {stage['train_loss']:.4f}  steps {stage['steps']}  {stage['seconds']} s"
              f"  -> {out}/checkpoints/{stage['stage']}")
    print(f"colour accuracy {report['colour_accuracy']:.3f}{' (circular)' if report['circular'] else ''} "
          f"on {report['questions']} questions "
          f"-> {out}/report.md ({report['seconds']} s)")
    print(f"logs: {out}/runs/<stage>/train.log, {out}/world.log, {out}/eval.log; "
          f"TensorBoard: tensorboard --logdir {out}/runs")
    return 0


# ---- reproduce: a published run's record -> the same inputs, stages and eval -> a verdict ----

def run_reproduce(source: str, *, stages: list[str] | None = None, profile: str | None = None,
                  out: Path | None = None, endpoint: str | None = None, plan_only: bool = False,
                  say=print) -> dict | None:
    """Read the record, say what differs here, prepare, train, evaluate, compare; write out/report.{md,json,png}.

    Every step reuses what an earlier call with the same `out` finished (prepared data, trained stages,
    answered questions), so a rerun after a crash continues. Returns the report, or None for a plan.
    """
    from llava.reproduce.compare import compare_losses, load_tolerances, verdict
    from llava.reproduce.environment import compare_environment
    from llava.reproduce.evaluation import reproduce_eval
    from llava.reproduce.inputs import check_inputs, prepare_inputs, reproduction_layout
    from llava.reproduce.plan import say_plan, write_recipes
    from llava.reproduce.record import load_record
    from llava.reproduce.report import write_report
    from llava.reproduce.training import train_recorded

    home = VolumeLayout.from_env()
    name = Path(source).name if Path(source).is_dir() else source.replace("/", "--")
    out = Path(out or home.runs / "reproduce" / name)
    _refuse_inside_input(out, source)
    record = load_record(source, out / "record", endpoint)
    chosen = _chosen_stages(record.stage_names, stages)
    layout = reproduction_layout(record.body, home, out)
    environment = compare_environment(record.body["environment"], profile)
    say(f"reproduce: {record.body['what']['description']}")
    say(f"record: {record.origin}; stages {', '.join(chosen)}; outputs in {out}")
    for item in environment.differences or ["environment: identical to the recorded run"]:
        say(f"  {item}")
    say(f"  -> {environment.meaning}")
    write_recipes(record, chosen, out / "recipes")
    if plan_only or environment.needs_gpus:
        say_plan(record, chosen, out, environment, say)
        return None
    require_smoke_extras("reproduce")
    notes = prepare_inputs(record, layout, chosen, endpoint, say)
    data = check_inputs(record, layout, chosen, notes)
    runs = [train_recorded(record.stage(name), record, layout, profile) for name in chosen]
    tolerances = load_tolerances(environment.exact)
    losses = [compare_losses(record.stage(run.name), run, tolerances) for run in runs]
    complete = chosen == record.stage_names
    evaluation, eval_check = reproduce_eval(record, layout, out, tolerances, environment.exact, complete)
    data += [eval_check] if eval_check else []
    found = verdict(losses, evaluation, data, runs, complete)
    last = layout.checkpoints / chosen[-1]
    report = write_report(out, origin=record.origin, record=record.body, environment=environment,
                          tolerances=tolerances, data=data, losses=losses, evaluation=evaluation, verdict=found,
                          checkpoint=last if last.is_dir() else None)
    say(f"verdict: {found.word}" + "".join(f"\n  - {reason}" for reason in found.reasons))
    say(f"report: {out / 'report.md'}")
    return report


def _refuse_inside_input(out: Path, source: str) -> None:
    """A local record folder is an input: the reproduction may neither sit inside it nor contain it."""
    folder = Path(source)
    if not folder.is_dir():
        return
    a, b = out.resolve(), folder.resolve()
    if a == b or b in a.parents or a in b.parents:
        raise KitError(f"--out {out} and the record folder {folder} overlap: choose an --out outside it")


def _chosen_stages(recorded: list[str], stages: list[str] | None) -> list[str]:
    if not stages:
        return recorded
    unknown = [name for name in stages if name not in recorded]
    if unknown:
        raise KitError(f"--stages {','.join(unknown)}: the record holds only {', '.join(recorded)}")
    return [name for name in recorded if name in stages]


def register_reproduce(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="re-run a published model's recorded run and say whether, and where, it reproduces",
        description="Reads llava_kit_run.json (from a Hub repo, a folder, or `seed` for the seed's own numbers), "
                    "says what differs in this environment, prepares the same inputs, trains the recorded stages, "
                    "evaluates with the recorded suite and writes report.md/report.json/loss.png. Resumable.")
    parser.add_argument("source", metavar="REPO_ID|FOLDER|seed")
    parser.add_argument("--stages", help="comma-separated subset of the recorded stages (default: all)")
    parser.add_argument("--profile", help="speed profile to train with (default: the recorded recipes as they are)")
    parser.add_argument("--out", type=Path, help="reproduction folder (default: runs/reproduce/<repo>)")
    parser.add_argument("--endpoint", help="Hub endpoint or mirror (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--plan", action="store_true", help="say what would run, and stop")
    parser.set_defaults(func=lambda args: _reproduce_exit(run_reproduce(
        args.source, stages=args.stages.split(",") if args.stages else None, profile=args.profile, out=args.out,
        endpoint=args.endpoint, plan_only=args.plan)))


def _reproduce_exit(report: dict | None) -> int:
    """0 reproduced (or a plan), 1 not reproduced or incomplete: scripts can branch on it."""
    return 0 if report is None or report["verdict"] == "reproduced" else 1
