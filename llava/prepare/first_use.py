"""First-use pins: a value public material does not give (a dataset repo's commit, an archive's sha256) is
recorded the first time it is seen, in a JSON file beside the downloads, and every later run is held to it.

Delete an entry (or the file) to accept a new value on purpose; the kit never rewrites one by itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llava.durable import write_text
from llava.errors import KitError

PINS_NAME = "first_use.json"


class FirstUsePins:
    """The pins recorded in one `first_use.json` (key -> values and when they were recorded)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / PINS_NAME

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            pins = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:
            raise KitError(f"first-use pin file {self.path} is unreadable ({err}): restore it, or delete it to "
                           "record every first-use pin afresh") from err
        if not isinstance(pins, dict):
            raise KitError(f"first-use pin file {self.path} is not a JSON object: delete it to record afresh")
        return pins

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def record(self, key: str, **values: Any) -> dict[str, Any]:
        """Record `values` under `key` (which must not be pinned yet); returns the entry."""
        pins = self._read()
        if key in pins:
            raise KitError(f"{key} is already pinned in {self.path}; delete that entry to pin it afresh")
        pins[key] = {**values, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return pins[key]
