"""Drive an unmodified VLMEvalKit checkout (run.py) as a subprocess and collect its table.

The checkpoint is handed over through run.py's `--config` JSON (evaluation.md §4.1): the HF-native
class `LLaVA_OneVision_HF` takes a local folder directly, so VLMEvalKit needs no source patch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

from llava.durable import write_text
from llava.errors import KitError
from llava.evaluate.suite import Suite

DEFAULT_DIR = Path("/opt/VLMEvalKit")
LOG_TAIL_LINES = 30


def vlmevalkit_dir() -> Path:
    return Path(os.environ.get("VLMEVALKIT_DIR", DEFAULT_DIR))


def config_document(suite: Suite, checkpoint: Path) -> dict:
    """run.py --config: one model (our checkpoint through the HF class) and one dataset."""
    spec = suite.vlmevalkit
    return {
        "model": {spec.model_key: {"class": spec.model_class, "model_path": str(Path(checkpoint).resolve())}},
        "data": {suite.dataset: {"class": spec.data_class, "dataset": suite.dataset}},
    }


def command_line(kit_dir: Path, config_path: Path, work_dir: Path, judge: str,
                 python: str = sys.executable) -> list[str]:
    return [python, str(kit_dir / "run.py"), "--config", str(config_path), "--judge", judge,
            "--work-dir", str(work_dir), "--mode", "all"]


def environment(lmudata: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """LMUData points VLMEvalKit at the pre-placed TSV; litellm must not fetch its cost map offline."""
    env = dict(os.environ if base is None else base)
    env["LMUData"] = str(lmudata)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


def installed_commit(kit_dir: Path) -> str | None:
    """The checkout's commit (git), else VLMEVALKIT_COMMIT (images that drop .git set it)."""
    try:
        out = subprocess.run(["git", "-C", str(kit_dir), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        lines = out.stdout.split()
        # only the checkout's own repository counts, not one that happens to contain it
        if out.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == kit_dir.resolve():
            return lines[1]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return os.environ.get("VLMEVALKIT_COMMIT") or None


def check_installation(kit_dir: Path, pinned: str) -> str | None:
    if not (kit_dir / "run.py").is_file():
        raise KitError(
            f"VLMEvalKit not found: {kit_dir / 'run.py'} does not exist. Run inside the eval image, set "
            "VLMEVALKIT_DIR to a checkout, or use --backend builtin"
        )
    commit = installed_commit(kit_dir)
    if commit is not None and commit != pinned:
        raise KitError(
            f"VLMEvalKit at {kit_dir} is at commit {commit}, the suite pins {pinned} "
            "(vlmevalkit.commit); check out the pinned commit or update the suite"
        )
    return commit


def stage_lmudata(tsv: Path, dataset: str, scratch: Path) -> Path:
    """VLMEvalKit looks for $LMUData/<dataset>.tsv: use the TSV's folder, or link it under that name."""
    tsv = Path(tsv).resolve()
    if tsv.name == f"{dataset}.tsv":
        return tsv.parent
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / f"{dataset}.tsv"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(tsv)
    return scratch


def run_subprocess(command: list[str], env: dict[str, str], log_path: Path) -> None:
    """Run, echoing output to the console and to `log_path`; a failure quotes the log's tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            log.write(line)
            tail.append(line)
        code = process.wait()
    if code != 0:
        raise KitError(f"VLMEvalKit run.py exited with {code}; full log {log_path}; last lines:\n" + "".join(tail))


def find_output(work_dir: Path, suite: Suite, suffixes: tuple[str, ...]) -> Path | None:
    """The newest `{model}_{dataset}<suffix>` below the work dir (run.py symlinks the latest run's)."""
    key = suite.vlmevalkit.model_key
    found = [p for suffix in suffixes for p in (work_dir / key).rglob(f"{key}_{suite.dataset}{suffix}")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_vlmevalkit(suite: Suite, checkpoint: Path, tsv: Path, out_dir: Path) -> tuple[Path, Path | None, str | None]:
    """Evaluate; returns (acc.csv, prediction sheet or None, VLMEvalKit commit or None)."""
    if suite.vlmevalkit is None:
        raise KitError(f"suite {suite.name} has no `vlmevalkit` section; add one to run --backend vlmevalkit")
    kit_dir = vlmevalkit_dir()
    commit = check_installation(kit_dir, suite.vlmevalkit.commit)
    scratch = out_dir / "vlmevalkit"
    config_path = write_text(scratch / "config.json", json.dumps(config_document(suite, checkpoint), indent=2))
    work_dir = scratch / "work"
    lmudata = stage_lmudata(tsv, suite.dataset, scratch / "LMUData")
    command = command_line(kit_dir, config_path, work_dir, suite.judge)
    run_subprocess(command, environment(lmudata), scratch / "run.log")
    acc = find_output(work_dir, suite, ("_acc.csv", "_exact_matching_acc.csv"))
    if acc is None:
        raise KitError(f"VLMEvalKit finished but wrote no *_{suite.dataset}_acc.csv under {work_dir}; "
                       f"see {scratch / 'run.log'}")
    sheet = find_output(work_dir, suite, (".xlsx", ".tsv"))
    return acc, sheet, commit
