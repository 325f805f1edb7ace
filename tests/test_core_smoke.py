"""The whole tiny pipeline: it learns colour through the image path, and only through it.

The negative control removes the shapes from every image (same sizes, same text): the colour can no
longer be seen, so circular accuracy must fall to what a blind reader of the options gets by always
naming one colour (the report's `blind_baseline`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tensorboard_events import scalars

# The smoke's own limit. Measured 2026-12-02 on the 2-core box shared by six jobs (load 15-18): 35 min wall,
# 6 min 21 s of CPU time (so roughly 3-6 min of wall time on an idle 2-core box). 30 min catches a hang,
# not a busy machine.
SMOKE_LIMIT_S = 1800
# pytest's per-test timeout must outlast the subprocess it waits for, or a slow shared box fails a good run
pytestmark = [pytest.mark.slow, pytest.mark.timeout(SMOKE_LIMIT_S + 60)]


def run_smoke(out, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "llava.cli", "smoke", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=SMOKE_LIMIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "colour accuracy" in done.stdout
    assert_stage_outputs(out, done.stdout + done.stderr)
    return json.loads((out / "report.json").read_text())


def assert_stage_outputs(out, console: str) -> None:
    """Each stage: a header naming its log, no library chatter on the console, loss and learning rate in
    runs/<stage>/tensorboard (read back with tensorboard's own EventAccumulator)."""
    for stage in ("stage1", "stage1_5", "stage2"):
        assert f"== {stage} (" in console and f"details: {out / 'runs' / stage / 'train.log'}" in console
        logged = scalars(out / "runs" / stage / "tensorboard")
        assert len(logged["train/loss"]) >= 1 and all(math.isfinite(v) for _, v in logged["train/loss"]), stage
        assert len(logged["train/learning_rate"]) == len(logged["train/loss"]), stage
    assert "== eval (" in console and "UNEXPECTED" in (out / "runs" / "stage1" / "train.log").read_text()
    for noise in ("UNEXPECTED", "LOAD REPORT", "FutureWarning", "Setting accelerator to CPU", "{'loss'"):
        assert noise not in console, noise


def test_smoke_reads_the_shuffled_options_and_the_image(tmp_path):
    """Circular: each question asked in VLMEvalKit's 4 rotated option orders, all 4 must be right."""
    report = run_smoke(tmp_path / "smoke")
    assert report["circular"] is True and report["questions"] >= 50 and report["rows"] == 4 * report["questions"]
    assert report["chance"] == pytest.approx(0.25 ** 4)
    assert report["colour_accuracy"] >= 0.90 and report["rows_right"] >= 0.90 * report["rows"]
    assert [s["stage"] for s in report["stages"]] == ["stage1", "stage1_5", "stage2"]
    assert all(math.isfinite(s["train_loss"]) and s["steps"] > 0 for s in report["stages"])
    for name in ("report.md", "loss.png", "eval/acc.csv", "eval/chart.png", "eval/results.json", "eval/loss.png"):
        assert (tmp_path / "smoke" / name).is_file(), name
    text = (tmp_path / "smoke" / "report.md").read_text()
    assert "![training loss per stage](loss.png)" in text and "circular" in text and "Negative control" in text
    assert all(Path(path).is_absolute() and Path(path).exists() for path in report["artifacts"].values())
    assert f"`{(tmp_path / 'smoke' / 'eval' / 'table.md').resolve()}`" in text
    for stage in ("stage1", "stage1_5", "stage2"):
        manifest = json.loads((tmp_path / "smoke" / "checkpoints" / stage / "manifest.json").read_text())
        assert manifest["kind"] == "checkpoint" and manifest["metrics"]["train_loss"] > 0


def test_negative_control_blank_images_stays_at_chance(tmp_path):
    """Blind to the colour, a model that reads the options well still names one colour: about 25% circular."""
    report = run_smoke(tmp_path / "blank", "--blank-images")
    assert report["blank_images"] is True and report["circular"] is True and report["questions"] >= 50
    assert 0.2 <= report["blind_baseline"] <= 0.4  # 4 colours drawn at random
    assert report["colour_accuracy"] <= report["blind_baseline"] + 0.1
