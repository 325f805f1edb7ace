"""llava.bench.measure: a subprocess's output, peak RSS of its process tree and its step-line times."""

from __future__ import annotations

import sys

from llava.bench.measure import run_measured

CHILD = """
import subprocess, sys, time
ballast = bytearray(64 * 2**20)                      # 64 MiB in the parent
child = subprocess.Popen([sys.executable, "-c", "b = bytearray(96 * 2**20); import time; time.sleep(1.2)"])
print("step 1/2  loss 2.0000", flush=True)
time.sleep(0.8)
print("step 2/2  loss 1.0000", flush=True)
child.wait()
"""


def test_peak_rss_covers_the_tree_and_step_lines_are_timed(tmp_path):
    done = run_measured([sys.executable, "-c", CHILD], None, tmp_path / "out.log", timeout=60, interval=0.05)
    assert done.returncode == 0
    assert "step 2/2  loss 1.0000" in done.output and (tmp_path / "out.log").read_text() == done.output
    assert sorted(done.step_times) == [1, 2]
    [between] = done.step_seconds()
    assert 0.7 < between < 5
    assert done.peak_rss > (64 + 96) * 2**20  # parent and child together


def test_a_run_past_its_timeout_is_killed(tmp_path):
    done = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], None, tmp_path / "out.log", timeout=1)
    assert done.returncode == -9 and done.seconds < 20
