"""Drive VLMEvalKit's unmodified run.py as a subprocess and collect its table.

The VLMEvalKit code is one pinned PyPI artifact (the suite's `vlmevalkit.package`, installed from
docker/vlmevalkit.txt with its sha256 by the eval image and by the CPU test). The checkpoint is handed
over through run.py's `--config` JSON (evaluation.md §4.1): the HF-native class `LLaVA_OneVision_HF`
takes a local folder directly, so VLMEvalKit needs no source patch. run.py starts through
`llava.evaluate.vlmevalkit_main`, which selects the training image processor first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from llava.durable import write_text
from llava.errors import KitError
from llava.evaluate.suite import Suite, VlmEvalKitSpec
from llava.torch_builds import torchvision_install

LOG_TAIL_LINES = 30
LAUNCHER = "llava.evaluate.vlmevalkit_main"
PIN_FILE = "docker/vlmevalkit.txt"
# Asked of the interpreter that will run VLMEvalKit: which artifact it has, torchvision, CUDA.
PROBE = """
import importlib.metadata as md, importlib.util as iu, json, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
cuda = False
try:
    import torch
    cuda = torch.cuda.is_available()
except Exception:
    pass
print(json.dumps({"package": version(sys.argv[1]), "torchvision": iu.find_spec("torchvision") is not None,
                  "torch": version("torch"), "cuda": cuda}))
"""


@dataclass(frozen=True)
class Runtime:
    """What the VLMEvalKit interpreter has."""
    package: str | None  # installed version of the pinned distribution
    torchvision: bool
    torch: str | None
    cuda: bool


def vlmevalkit_python() -> str:
    """The interpreter with VLMEvalKit installed: $VLMEVALKIT_PYTHON, else this one (the eval image)."""
    return os.environ.get("VLMEVALKIT_PYTHON") or sys.executable


def probe_runtime(python: str, distribution: str) -> Runtime:
    try:
        out = subprocess.run([python, "-c", PROBE, distribution], capture_output=True, text=True, timeout=300)
    except OSError as err:
        raise KitError(f"cannot run the VLMEvalKit interpreter {python} ($VLMEVALKIT_PYTHON): {err}") from None
    if out.returncode != 0:
        raise KitError(f"{python} ($VLMEVALKIT_PYTHON) failed to report its packages:\n{out.stderr[-2000:]}")
    return Runtime(**json.loads(out.stdout.strip().splitlines()[-1]))


def check_runtime(runtime: Runtime, spec: VlmEvalKitSpec, python: str) -> None:
    """Refuse, saying what to do, unless `python` can run the pinned VLMEvalKit on this checkpoint."""
    name, version = spec.package.split("==")
    if runtime.package is None:
        raise KitError(
            f"VLMEvalKit ({spec.package}) is not installed for {python}: run inside the eval image, or "
            f"`pip install --no-deps --require-hashes -r {PIN_FILE}` plus its requirements "
            "(docker/eval.Dockerfile), or set VLMEVALKIT_PYTHON, or use --backend builtin")
    if runtime.package != version:
        raise KitError(f"{python} has {name} {runtime.package}, the suite pins {spec.package} "
                       f"(vlmevalkit.package): install the pinned one from {PIN_FILE}")
    if not runtime.torchvision:
        install = torchvision_install(str(runtime.torch))
        how = f"`{install}`" if install else "the torchvision release paired with it (pytorch/vision's README table)"
        raise KitError(
            f"{python} has no torchvision: VLMEvalKit's datasets import it and AutoProcessor needs it for "
            f"LlavaOnevisionProcessor's video slot. Install the build paired with torch {runtime.torch}: {how}")
    if not runtime.cuda:
        raise KitError(
            f"no CUDA device for {python}: VLMEvalKit's {spec.model_class} loads the model in float16 and moves "
            "it and every input to 'cuda' (vlmeval/vlm/llava/llava.py), so it cannot run on CPU unmodified. "
            "Use --backend builtin here (the same prompts, greedy decoding and scoring; "
            "tests/test_eval_vlmevalkit_real.py checks it against VLMEvalKit row by row), or run on a GPU "
            "(docker compose run eval)")


def config_document(suite: Suite, checkpoint: Path) -> dict:
    """run.py --config: one model (our checkpoint through the HF class) and one dataset."""
    spec = suite.vlmevalkit
    return {
        "model": {spec.model_key: {"class": spec.model_class, "model_path": str(Path(checkpoint).resolve())}},
        "data": {suite.dataset: {"class": spec.data_class, "dataset": suite.dataset}},
    }


def command_line(config_path: Path, work_dir: Path, judge: str, python: str | None = None) -> list[str]:
    """run.py's arguments, started through the kit's launcher in the VLMEvalKit interpreter."""
    return [python or vlmevalkit_python(), "-m", LAUNCHER, "--config", str(config_path), "--judge", judge,
            "--work-dir", str(work_dir), "--mode", "all"]


def environment(lmudata: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """LMUData points VLMEvalKit at the pre-placed TSV; litellm must not fetch its cost map offline."""
    env = dict(os.environ if base is None else base)
    env["LMUData"] = str(lmudata)
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


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


def run_vlmevalkit(suite: Suite, checkpoint: Path, tsv: Path, out_dir: Path) -> tuple[Path, Path | None, str]:
    """Evaluate; returns (acc.csv, prediction sheet or None, the VLMEvalKit commit the pinned code is)."""
    if suite.vlmevalkit is None:
        raise KitError(f"suite {suite.name} has no `vlmevalkit` section; add one to run --backend vlmevalkit")
    python = vlmevalkit_python()
    check_runtime(probe_runtime(python, suite.vlmevalkit.package.split("==")[0]), suite.vlmevalkit, python)
    scratch = out_dir / "vlmevalkit"
    config_path = write_text(scratch / "config.json", json.dumps(config_document(suite, checkpoint), indent=2))
    work_dir = scratch / "work"
    lmudata = stage_lmudata(tsv, suite.dataset, scratch / "LMUData")
    command = command_line(config_path, work_dir, suite.judge, python)
    run_subprocess(command, environment(lmudata), scratch / "run.log")
    acc = find_output(work_dir, suite, ("_acc.csv", "_exact_matching_acc.csv"))
    if acc is None:
        raise KitError(f"VLMEvalKit finished but wrote no *_{suite.dataset}_acc.csv under {work_dir}; "
                       f"see {scratch / 'run.log'}")
    sheet = find_output(work_dir, suite, (".xlsx", ".tsv"))
    return acc, sheet, suite.vlmevalkit.commit
