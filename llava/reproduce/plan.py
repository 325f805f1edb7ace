"""What a reproduction would run, said without running it (no GPUs here, or --plan), and the recipes as files."""

from __future__ import annotations

from pathlib import Path

from llava.durable import write_text
from llava.reproduce.evaluation import packaged_suite
from llava.reproduce.environment import EnvironmentDiff
from llava.reproduce.record import LoadedRecord


def write_recipes(record: LoadedRecord, chosen: list[str], folder: Path) -> None:
    """Each recorded recipe as a file `llava-kit train` takes (what the plan shows; handy for by-hand runs)."""
    import yaml

    for name in chosen:
        write_text(folder / f"{name}.yaml", yaml.safe_dump(record.stage(name)["recipe"], sort_keys=False))


def say_plan(record: LoadedRecord, chosen: list[str], out: Path, environment: EnvironmentDiff, say) -> None:
    why = (f"the recorded run used {environment.needs_gpus} GPU(s) and this machine has none to match"
           if environment.needs_gpus else "--plan")
    say(f"not running ({why}); on a GPU host this command would run, in order:")
    for name in chosen:
        stage = record.stage(name)
        data = stage.get("dataset") or {}
        pins = [f"{m['repo_id']} at {m.get('commit') or m.get('revision')}"
                for m in (stage.get("models") or {}).values() if m and m.get("repo_id")]
        if pins:
            say(f"  llava-kit prepare models  # {', '.join(pins)}")
        if data.get("world"):
            say(f"  rebuild the shapes world from seed {data['world']['seed']}")
        elif data.get("repo_id"):
            subset = data.get("subset") or {}
            drawn = (f"  # subset of {subset['size']} drawn with seed {subset['seed']}" if subset.get("size")
                     else "  # every record")
            say(f"  llava-kit prepare data --stage {data.get('stage')} --revision "
                f"{data.get('commit') or data.get('revision')}"
                + (f" --from-index {record.folder / subset['file']}" if subset.get("file") and record.folder
                   else drawn))
        say(f"  LLAVA_KIT_CHECKPOINTS={out / 'checkpoints'} LLAVA_KIT_RUNS={out / 'runs'} "
            f"llava-kit train {out / 'recipes' / (name + '.yaml')} --nproc {stage.get('world_size') or 1}"
            f"  # then compare with the published final loss {stage['metrics'].get('train_loss')}")
    evaluation = record.body["eval"]
    suite = record.file(evaluation.get("suite_file")) or packaged_suite(evaluation)
    say(f"  llava-kit eval {out / 'checkpoints' / chosen[-1]} --suite {suite} "
        f"--backend {evaluation['backend']}  # then compare with {len(evaluation['rows'])} published rows")
    say(f"  and write {out / 'report.md'} (loss curves, deltas, verdict)")
