"""The run's lifecycle, for people and tests: runs/<name>/events.jsonl plus one stderr line per event.

Resumes, saves, stops and aborts are rare and matter after the fact ("where did it resume from?"),
so they go to a file in the run folder, not only to a scrolling log. Only the main process writes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


class EventLog:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def emit(self, event: str, message: str, **fields: Any) -> None:
        if not self.enabled:
            return
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = {"time": when, "event": event, "message": message, **fields}
        try:  # best effort: on a full disk the stderr line still tells the story
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(record) + "\n").encode())
            finally:
                os.close(fd)
        except OSError:
            pass
        tqdm.write(f"[llava-kit] {message}", file=sys.stderr)  # on its own line, above a running progress bar

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
