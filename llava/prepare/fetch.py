"""Get a stage's source files: from the Hub (pinned, resumable) or from a folder the user already has.

A table revision that is not a 40-hex commit (`main`, or none) is pinned at first use: the commit the
first download resolves it to is recorded in `<downloads>/first_use.json`, and every later prepare with
the same downloads folder fetches that commit, not whatever the branch has moved to.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava.errors import KitError
from llava.manifest import sha256_file
from llava.prepare.first_use import FirstUsePins
from llava.prepare.sources import StageSource

COMMIT = re.compile("^[0-9a-f]{40}$")


@dataclass
class FetchedSource:
    """Where a stage's source files are, and which repo commit they came from (None for a local folder)."""

    root: Path
    repo_id: str
    revision: str | None
    commit: str | None
    origin: str  # "hub" | "local"
    pin: str | None = None  # how the commit was chosen: pinned, first-use (recorded/reused), --revision
    hashes: dict[str, str] = field(default_factory=dict)

    def file(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_file():
            raise KitError(f"{self.describe()} has no file {rel}: fix the stage's files in dataset_sources.yaml")
        return path

    def glob(self, pattern: str) -> list[Path]:
        paths = sorted(path for path in self.root.glob(pattern) if path.is_file())
        if not paths:
            raise KitError(f"{self.describe()} has no file matching {pattern}: fix dataset_sources.yaml")
        return paths

    def describe(self) -> str:
        if self.origin == "local":
            return f"source folder {self.root}"
        return f"dataset repo '{self.repo_id}' at revision '{self.revision}' ({self.root})"

    def sha256(self, paths: list[Path]) -> str:
        """One hash for the files a pool is read from: the file's own for one, else a hash of the listing."""
        for path in paths:
            rel = path.relative_to(self.root).as_posix()
            if rel not in self.hashes:
                self.hashes[rel] = sha256_file(path)
        if len(paths) == 1:
            return self.hashes[paths[0].relative_to(self.root).as_posix()]
        rels = sorted(path.relative_to(self.root).as_posix() for path in paths)
        lines = "".join(f"{rel} {self.hashes[rel]}\n" for rel in rels)
        return hashlib.sha256(lines.encode()).hexdigest()

    def record(self) -> dict[str, Any]:
        """What the dataset manifest keeps about the source."""
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": self.commit,
                "origin": self.origin, "pin": self.pin, "files_sha256": dict(sorted(self.hashes.items()))}


def fetch_source(
    source: StageSource,
    downloads: Path,
    *,
    endpoint: str | None = None,
    local_dir: Path | None = None,
    revision: str | None = None,
) -> FetchedSource:
    """Download the stage's files into downloads/<owner>--<name> (a rerun resumes), or use `local_dir`."""
    hub = source.hub
    if local_dir is not None:
        if not Path(local_dir).is_dir():
            raise KitError(f"--source-dir {local_dir} does not exist or is not a directory")
        return FetchedSource(Path(local_dir), hub.repo_id, None, None, "local")
    from llava.prepare.hub import fetch_repo  # the Hub engineer's downloader; raises KitErrors

    wanted = revision or hub.revision or "main"
    pins, key = FirstUsePins(downloads), f"{hub.repo_type}:{hub.repo_id}@{wanted}"
    first_use = revision is None and not COMMIT.match(wanted)
    pinned = pins.get(key) if first_use else None
    snapshot = fetch_repo(
        hub.repo_id, downloads / hub.repo_id.replace("/", "--"), repo_type=hub.repo_type,
        revision=pinned["commit"] if pinned else wanted, allow_patterns=hub.files, endpoint=endpoint,
    )
    if not first_use:
        pin = "--revision" if revision else "pinned"
    elif pinned:
        pin = f"first-use, recorded {pinned.get('recorded_at')} in {pins.path}"
    else:
        recorded = pins.record(key, commit=snapshot.commit)
        pin = f"first-use, recorded {recorded['recorded_at']} in {pins.path}"
    return FetchedSource(snapshot.path, hub.repo_id, wanted, snapshot.commit, "hub", pin)
