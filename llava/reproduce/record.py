"""Read a run record (`llava_kit_run.json` and the files it names) from a folder or a Hub repo."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.errors import KitError
from llava.publish.run_record import FORMAT, RECORD_DIR, RECORD_NAME

SEED_SOURCE = "seed"
# What a reproduction needs from a published repo: never the weights.
RECORD_PATTERNS = [RECORD_NAME, f"{RECORD_DIR}/**", "eval/*", "subsets/*"]
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class LoadedRecord:
    body: dict[str, Any]
    folder: Path | None  # where the files it names are; None for the seed's numbers
    origin: str  # said in the report: where the record came from

    def file(self, rel: str | None) -> Path | None:
        if not rel or self.folder is None:
            return None
        path = self.folder / rel
        return path if path.is_file() else None

    def stage(self, name: str) -> dict[str, Any]:
        return next(stage for stage in self.body["stages"] if stage["name"] == name)

    @property
    def stage_names(self) -> list[str]:
        return [stage["name"] for stage in self.body["stages"]]


def load_record(source: str, download_dir: Path, endpoint: str | None = None) -> LoadedRecord:
    """`seed`, a folder holding llava_kit_run.json, or ORG/NAME on the Hub (only the record's files are fetched)."""
    if source == SEED_SOURCE:
        from llava.reproduce.seed_record import seed_record

        return LoadedRecord(seed_record(), None, "the seed's published numbers (llava/publish/card_facts.yaml, "
                                                 "the seed table of eval/mmbench_dev_en.yaml)")
    folder = Path(source)
    if folder.is_dir():
        return LoadedRecord(_read(folder / RECORD_NAME), folder, f"folder {folder}")
    if not REPO_ID.match(source):
        raise KitError(f"reproduce: {source!r} is neither a folder nor a Hub repo id (ORG/NAME) nor 'seed'")
    from llava.hub_endpoint import resolve_endpoint
    from llava.prepare.hub import fetch_repo

    snapshot = fetch_repo(source, download_dir, allow_patterns=RECORD_PATTERNS, endpoint=endpoint)
    return LoadedRecord(_read(snapshot.path / RECORD_NAME), snapshot.path,
                        f"{source} at commit {snapshot.commit[:12]} on {resolve_endpoint(endpoint)}")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise KitError(f"{path.parent} holds no {RECORD_NAME}: it was not published by a llava-kit that records "
                       "its runs (republish it with `llava-kit publish`)")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise KitError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
    if body.get("format") != FORMAT or not isinstance(body.get("stages"), list) or not body["stages"]:
        raise KitError(f"{path}: not a llava-kit run record of format {FORMAT} with stages")
    return body
