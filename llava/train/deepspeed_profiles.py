"""DeepSpeed configs are data: stages/deepspeed/<profile>.json, or any JSON path."""

from __future__ import annotations

import json

from llava.errors import KitError
from llava.packaged import STAGES_DIR, packaged_path

PROFILES_DIR = STAGES_DIR / "deepspeed"


def load_deepspeed_config(name_or_path: str | None) -> dict | None:
    if not name_or_path:
        return None
    path = packaged_path(name_or_path)
    if path.suffix != ".json":
        path = PROFILES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
        raise KitError(f"DeepSpeed profile {name_or_path!r} not found ({path}); known profiles: {known}")
    return json.loads(path.read_text())
