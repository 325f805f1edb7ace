"""The kit at the real model's size on CPU: stand-in base models served by the loopback Hub, a handful
of samples, `llava-kit` stages run as real subprocesses and measured (peak RSS of the process tree,
seconds, checkpoint sizes on disk).

Tests (tests/test_real_size.py) use the pieces; run as a script it is the real-size rehearsal a user
runs on a bigger box (each stage of each profile, figures printed as a table):

    python tests/real_size_world.py WORK [--stages stage1 stage1_5 stage2] [--profiles seed fast] [--layers N]

`--layers N` cuts both models to N transformer layers and keeps every width, the vocabulary and the tied
embedding (the real-width rehearsal, tests/test_real_width_rehearsal.py, runs it with N=2).

Stages 1.5 and 2 train all 0.9B parameters in fp32 with Adam on the host (about 14 GB of weights,
gradients and moments before activations), and stage 2's 6x6-grid image runs 37 SigLIP tiles: give
those a machine with 48 GB of RAM and time (docs/performance.md has the figures measured so far).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from fake_hub import FakeHub  # noqa: E402
from llava.bench.measure import Measured, run_measured  # noqa: E402
from prepare_samples import write_image  # noqa: E402
from source_pins import pinned_revision  # noqa: E402

# One sample a stage (batch 1, 2 optimizer steps read it twice): 384x384 is stage 1's square image and
# a 1x1 grid later; 2304x2304 selects stage 2's 6x6 pinpoint (anyres_max_9 then pools its features).
IMAGES = {"stage1": [(384, 384)], "stage1_5": [(384, 384)], "stage2": [(384, 384), (2304, 2304)]}
CAPTION = "a photo of a red circle on the left of a blue square"


@contextmanager
def stand_in_hub(stand_ins: dict[str, Path], root: Path):
    """The loopback Hub holding each stand-in folder as its repo's `main`."""
    from llava.bench.stand_ins import repo_files

    with FakeHub(root) as hub:
        for repo_id, folder in stand_ins.items():  # at the commit model_sources.yaml pins, as the real Hub
            hub.add_repo(repo_id).commit(repo_files(folder), oid=pinned_revision(repo_id))
        yield hub


def kit(*args: str) -> list[str]:
    return [sys.executable, "-m", "llava.cli", *args]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    # DeepSpeed's CPU ops come from torch's extension cache, shared with every other test of this checkout
    env = {**os.environ,
           "LLAVA_KIT_HOME": str(home), "HF_HUB_OFFLINE": "0", "TOKENIZERS_PARALLELISM": "false", "NUM_GPUS": "1"}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return {**env, **extra}


def prepare_models(home: Path, hub_url: str) -> Measured:
    home.mkdir(parents=True, exist_ok=True)
    return run_measured(kit("prepare", "models", "--endpoint", hub_url), cli_env(home), home / "prepare-models.log", 900)


def write_stage_data(home: Path, stage: str) -> Path:
    """datasets/<stage>/ with IMAGES[stage] as records, verified by `llava-kit prepare verify`."""
    folder = home / "datasets" / stage
    records = []
    for number, size in enumerate(IMAGES[stage]):
        name = f"{stage}-{size[0]}x{size[1]}.jpg"
        write_image(folder / "images" / name, size=size, seed=number)
        prompt = "<image>\n" if stage == "stage1" else "<image>\nDescribe the image in detail."
        records.append({"id": f"{stage}-{number}", "image": name,
                        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": CAPTION}]})
    (folder / "data.json").write_text(json.dumps(records))
    done = run_measured(kit("prepare", "verify", str(folder)), cli_env(home), home / f"verify-{stage}.log", 300)
    if done.returncode:
        raise RuntimeError(done.output[-3000:])
    return folder


def depth_overrides(layers: int | None) -> list[str]:
    """Recipe lines for stand-ins cut to `layers` layers: SigLIP keeps all but its last, as at full depth."""
    return [] if layers is None else [f"model.vision_layers={layers - 1}"]


def stage_overrides(stage: str, steps: int = 2) -> list[str]:
    """The real recipe at batch 1 on one process, a resumable save after every step."""
    return [f"training.max_steps={steps}", "training.per_device_batch=1", "training.grad_accum=1",
            "training.num_gpus=1", "training.logging_steps=1", "training.dataloader_num_workers=0",
            "checkpointing.resume_every_steps=1", "checkpointing.keep_last=2"]


def train(home: Path, stage: str, profile: str, *, steps: int = 2, extra: list[str] = (), timeout: float = 3600,
          env: dict[str, str] | None = None, log_name: str | None = None) -> Measured:
    from llava.recipe import STAGES_DIR

    args = ["train", str(STAGES_DIR / f"{stage}.yaml"), "--profile", profile,
            *[f"--set={o}" for o in [*stage_overrides(stage, steps), *extra]]]
    log = home / f"{log_name or f'train-{stage}-{profile}'}.log"
    return run_measured(kit(*args), cli_env(home, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), **(env or {})),
                        log, timeout)


def write_two_row_eval(home: Path) -> tuple[Path, Path]:
    """A 2-row MMBench-format TSV and its suite, for the builtin eval of a real-size checkpoint."""
    from PIL import Image

    from llava.evaluate.mmbench_tsv import write_mmbench_tsv

    questions = [{"index": i, "question": "What colour is the shape?", "options": ["red", "green", "blue", "grey"],
                  "answer": "A", "category": "colour", "l2_category": "attribute",
                  "image": Image.new("RGB", (384, 384), (200 - 100 * i, 40, 40))} for i in range(2)]
    tsv = write_mmbench_tsv(questions, home / "eval" / "two.tsv", circular=False)
    suite = home / "eval" / "two.yaml"
    suite.write_text("name: two_rows\ndataset: Real_Size_Two_Rows\nsplit: dev\ncircular: false\n"
                     "prompt:\n  max_new_tokens: 2\n")
    return tsv, suite


def evaluate_two_rows(home: Path, checkpoint: Path) -> Measured:
    tsv, suite = write_two_row_eval(home)
    return run_measured(kit("eval", str(checkpoint), "--suite", str(suite), "--tsv", str(tsv), "--backend", "builtin"),
                        cli_env(home), home / f"eval-{checkpoint.name}.log", 1200)


def publish_preview(home: Path, checkpoint: Path) -> tuple[Measured, Path]:
    """`publish --dry-run` of `checkpoint` into home/publish-<name>/ (the folder the Hub would get)."""
    preview = home / f"publish-{checkpoint.name}"
    return run_measured(kit("publish", str(checkpoint), "--repo-id", "me/real-size", "--dry-run", str(preview)),
                        cli_env(home), home / f"publish-{checkpoint.name}.log", 1200), preview


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def checkpoint_sizes(home: Path, stage: str) -> dict[str, int]:
    """Bytes on disk of the stage's model folder and of its newest resumable checkpoint."""
    trainer = home / "runs" / stage / "trainer"
    resumable = sorted(trainer.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return {"model_folder": folder_bytes(home / "checkpoints" / stage),
            "resumable": folder_bytes(resumable[-1]) if resumable else 0}


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    from llava.bench.stand_ins import write_stand_ins

    parser = argparse.ArgumentParser(description="the three stages at the real model's size on this host")
    parser.add_argument("work", type=Path)
    parser.add_argument("--stages", nargs="+", default=["stage1", "stage1_5", "stage2"])
    parser.add_argument("--profiles", nargs="+", default=["seed"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--layers", type=int, help="transformer layers of both models (default: the real counts)")
    args = parser.parse_args(argv)
    home = args.work / "home"
    stand_ins = write_stand_ins(args.work / "stand-ins", layers=args.layers)
    with stand_in_hub(stand_ins, args.work / "hub") as hub:
        fetched = prepare_models(home, hub.url)
    print(f"prepare models: {fetched.seconds:.0f} s, peak RSS {_gb(fetched.peak_rss)}", flush=True)
    if fetched.returncode:
        print(fetched.output[-3000:])
        return 1
    for profile in args.profiles:
        for stage in args.stages:
            write_stage_data(home, stage)
            done = train(home, stage, profile, steps=args.steps, log_name=f"train-{stage}-{profile}",
                         extra=[f"name={stage}", *depth_overrides(args.layers)])
            sizes = checkpoint_sizes(home, stage) if done.returncode == 0 else {}
            print(json.dumps({"stage": stage, "profile": profile, "rc": done.returncode,
                              "seconds": round(done.seconds, 1), "peak_rss_gib": round(done.peak_rss / 2**30, 2),
                              "step_seconds": [round(s, 1) for s in done.step_seconds()],
                              **{k: round(v / 2**30, 2) for k, v in sizes.items()}}), flush=True)
            if done.returncode:
                print(done.output[-3000:])
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
