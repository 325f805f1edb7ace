"""DeepSpeed configs are data: stages/deepspeed/<profile>.json, or any JSON path."""

from __future__ import annotations

from llava.packaged import STAGES_DIR, packaged_path
from llava.typed_config import read_document

PROFILES_DIR = STAGES_DIR / "deepspeed"


def load_deepspeed_config(name_or_path: str | None) -> dict | None:
    if not name_or_path:
        return None
    path = packaged_path(name_or_path)
    if path.suffix != ".json":
        path = PROFILES_DIR / f"{name_or_path}.json"
    known = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
    return read_document(path, f"DeepSpeed profile {name_or_path!r} not found ({path}); known profiles: {known}")
