"""Run a command as a subprocess and measure it: wall seconds, peak RSS of its whole process tree (torchrun,
DeepSpeed and dataloader children included), and when each training step's log line appeared.

Hand-written: /usr/bin/time reports one process, psutil gives the tree but no sampler.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

STEP_LINE = re.compile(r"step (\d+)/\d+\s+loss")  # llava.train.console's per-step line


@dataclass
class Measured:
    returncode: int
    output: str
    seconds: float
    peak_rss: int
    step_times: dict[int, float] = field(default_factory=dict)  # step -> seconds from start to its line

    def step_seconds(self) -> list[float]:
        """Seconds between consecutive logged steps (the first step's own time includes the model load)."""
        stamps = [self.step_times[k] for k in sorted(self.step_times)]
        return [b - a for a, b in zip(stamps, stamps[1:])]


def _copy_lines(stream, sink, start: float, step_times: dict[int, float]) -> None:
    for line in stream:
        sink.write(line)
        sink.flush()
        hit = STEP_LINE.search(line)
        if hit:
            step_times.setdefault(int(hit.group(1)), time.monotonic() - start)


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(args: list[str], env: dict[str, str] | None, log: Path, timeout: float,
                 interval: float = 0.2) -> Measured:
    """Run `args`, sampling the tree's summed RSS every `interval` s; output goes to `log` through a
    reader thread (a full pipe would stall a long run). Killed after `timeout` s (returncode -9)."""
    start = time.monotonic()
    peak, step_times = 0, {}
    with open(log, "w") as sink:
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        reader = threading.Thread(target=_copy_lines, args=(process.stdout, sink, start, step_times), daemon=True)
        reader.start()
        try:
            root = psutil.Process(process.pid)
            while process.poll() is None:
                peak = max(peak, tree_rss(root))
                if time.monotonic() - start > timeout:
                    process.kill()
                time.sleep(interval)
        except psutil.NoSuchProcess:
            process.wait()
        reader.join(timeout=30)
    return Measured(process.returncode, log.read_text(), time.monotonic() - start, peak, step_times)
