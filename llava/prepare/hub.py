"""Hub downloads for `llava-kit prepare`: one call per repo, pinned, resumable, with errors a user can act on.

The transfer itself is huggingface_hub's `snapshot_download` (it resumes an interrupted file with an HTTP
Range request, skips files already complete from an earlier run, and uses hf_xet automatically when the
package is installed and the server offers Xet storage). What this module adds: the revision is resolved
to a commit once, so every file comes from the same commit; free disk space is checked against the
listed sizes before anything is fetched; and every failure becomes a `KitError` naming the repo,
revision, file or folder at fault. (hf_transfer is not used: huggingface_hub 2.x retired it for hf_xet.)

Resuming, as huggingface_hub 2.4 does it: within one call an interrupted file continues from the last
10 MiB chunk written, via a Range request (up to 5 retries); a partial file is deleted when the call
fails, so a rerun keeps every completed file and restarts only the unfinished ones.
Archives are extracted by `llava.prepare.archives.extract_zip` (CRC-checked, resumable).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llava.errors import KitError
from llava.hub_endpoint import resolve_endpoint

@dataclass(frozen=True)
class Snapshot:
    """What one download produced: where, from which commit, which files and how many bytes."""

    path: Path
    repo_id: str
    repo_type: str
    revision: str
    commit: str
    files: tuple[str, ...]
    total_bytes: int


def download_repo(
    repo_id: str,
    local_dir: str | os.PathLike,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    allow_patterns: list[str] | str | None = None,
    endpoint: str | None = None,
    ignore_patterns: list[str] | str | None = None,
) -> Path:
    """Download `repo_id` at `revision` (default: main) into `local_dir`; return the folder."""
    return fetch_repo(
        repo_id, local_dir, repo_type=repo_type, revision=revision,
        allow_patterns=allow_patterns, ignore_patterns=ignore_patterns, endpoint=endpoint,
    ).path


def fetch_repo(
    repo_id: str,
    local_dir: str | os.PathLike,
    *,
    repo_type: str = "model",
    revision: str | None = None,
    allow_patterns: list[str] | str | None = None,
    ignore_patterns: list[str] | str | None = None,
    endpoint: str | None = None,
) -> Snapshot:
    """Like `download_repo`, but also report the resolved commit and the files fetched (for manifests)."""
    from huggingface_hub import HfApi, snapshot_download

    endpoint = resolve_endpoint(endpoint)
    revision = revision or "main"
    target = _writable_folder(Path(local_dir))
    api = HfApi(endpoint=endpoint)
    where = f"{repo_type} repo '{repo_id}' on {endpoint}"
    with _hub_errors(repo_id, repo_type, revision, endpoint, target):
        commit = api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
        listing = _listed_files(api, repo_id, repo_type, commit, allow_patterns, ignore_patterns)
        if not listing:
            raise KitError(f"{where} at revision '{revision}' has no file matching {allow_patterns!r}")
        _check_free_space(target, listing, where)
        snapshot_download(
            repo_id, repo_type=repo_type, revision=commit, local_dir=target, endpoint=endpoint,
            allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
        )
    return Snapshot(
        path=target, repo_id=repo_id, repo_type=repo_type, revision=revision, commit=commit,
        files=tuple(sorted(listing)), total_bytes=sum(size for size in listing.values() if size),
    )


def _writable_folder(folder: Path) -> Path:
    """Create the target folder or say why it cannot be used, before any network traffic."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KitError(
            f"cannot create download folder {folder}: {err.strerror or err}. "
            "Point the models/datasets volume (LLAVA_KIT_MODELS / LLAVA_KIT_DATASETS) at a writable disk"
        ) from err
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise KitError(f"download folder {folder} is not a writable directory; fix its permissions or choose another path")
    return folder.resolve()


def _listed_files(api, repo_id, repo_type, commit, allow_patterns, ignore_patterns) -> dict[str, int | None]:
    """Path -> size of the files the download will fetch (sizes as the server lists them)."""
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    entries = [
        entry for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=commit, recursive=True)
        if isinstance(entry, RepoFile)
    ]
    wanted = set(filter_repo_objects(
        [entry.path for entry in entries], allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
    ))
    return {entry.path: entry.size for entry in entries if entry.path in wanted}


def _check_free_space(target: Path, listing: dict[str, int | None], where: str) -> None:
    """Refuse to start a download that cannot fit; files already complete on disk don't count."""
    needed = 0
    for rel, size in listing.items():
        if size is None:
            continue
        local = target / rel
        if not (local.is_file() and local.stat().st_size == size):
            needed += size
    free = shutil.disk_usage(target).free
    if needed > free:
        raise KitError(
            f"not enough disk space in {target} for {where}: {_human(needed)} still to download, "
            f"{_human(free)} free. Free space or point the volume at a larger disk"
        )


def _human(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} PB"


class _hub_errors:
    """Turn huggingface_hub / OS failures into KitErrors that say what to change."""

    def __init__(self, repo_id: str, repo_type: str, revision: str, endpoint: str, target: Path):
        self.repo_id, self.repo_type, self.revision = repo_id, repo_type, revision
        self.endpoint, self.target = endpoint, target

    def __enter__(self):
        return self

    def __exit__(self, exc_type, err, tb):
        if err is None or isinstance(err, KitError):
            return False
        message = self.explain(err)
        if message is None:
            return False
        raise KitError(message) from err

    def explain(self, err: BaseException) -> str | None:
        import httpx2
        from huggingface_hub.errors import (
            GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError,
            OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError,
        )

        where = f"{self.repo_type} repo '{self.repo_id}' on {self.endpoint}"
        if isinstance(err, OfflineModeIsEnabled):
            return f"cannot download {where}: HF_HUB_OFFLINE is set; unset it (or set it to 0) to download"
        if isinstance(err, GatedRepoError):
            return f"{where} is gated: accept its terms on the Hub and provide a token (HF_TOKEN or HF_TOKEN_PATH)"
        if isinstance(err, RepositoryNotFoundError):
            return (f"{where} does not exist (or is private): check the repo id and repo type"
                    " (a private repo needs HF_TOKEN or HF_TOKEN_PATH)")
        if isinstance(err, RevisionNotFoundError):
            return f"revision '{self.revision}' does not exist in {where}: use a branch, tag or commit sha of that repo"
        if isinstance(err, RemoteEntryNotFoundError):
            return f"{where}: a listed file vanished at revision '{self.revision}' ({err}); rerun to retry"
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return (f"disk full while downloading {where} into {self.target}: free space (or use a larger disk) "
                    "and rerun; files already complete are kept")
        if isinstance(err, (httpx2.TransportError, LocalEntryNotFoundError)):
            return (f"cannot reach {self.endpoint} while downloading {where} ({type(err).__name__}: {err}); "
                    "check the network or set HF_ENDPOINT to a reachable mirror, then rerun to resume")
        if isinstance(err, HfHubHTTPError):
            return f"the Hub refused a request for {where}: {err}"
        if isinstance(err, OSError):
            return (f"download of {where} into {self.target} failed: {err}. "
                    "Rerun to resume; files already complete are kept")
        return None
