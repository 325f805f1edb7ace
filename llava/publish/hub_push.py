"""Push a repo folder with huggingface_hub: create the repo, skip what the Hub already holds, commit the rest.

The token is read only through huggingface_hub's `get_token()` (HF_TOKEN, or the file HF_TOKEN_PATH
names: compose mounts the secrets/ folder for it) and handed to the client; it is never printed, logged or written anywhere.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from llava.errors import KitError
from llava.hub_endpoint import resolve_endpoint
from llava.manifest import sha256_file
from llava.owned import MARKER_NAME
from llava.publish.repo_folder import local_files


def require_token() -> str:
    """The Hub token, or a KitError that says where it is looked for (never what it is)."""
    from huggingface_hub import get_token

    token = get_token()
    if token:
        return token
    token_path = os.environ.get("HF_TOKEN_PATH")
    hint = (f"HF_TOKEN_PATH is {token_path}, but that file is missing or empty"
            if token_path else "HF_TOKEN_PATH is not set")
    raise KitError(
        "no Hugging Face token: publishing reads it from the HF_TOKEN environment variable or from the file "
        f"named by HF_TOKEN_PATH ({hint}, HF_TOKEN is not set). With compose, write the token to "
        "secrets/hf_token beside compose.yaml, readable by uid 1000 (`install -m 400 -o 1000 -g 1000 token.txt "
        "secrets/hf_token`), or run `HF_TOKEN=hf_... docker compose run --rm publish`. "
        "Use --dry-run OUT to build the repo folder without a token"
    )


@dataclass(frozen=True)
class PushOutcome:
    repo_url: str
    commit_url: str | None  # None: nothing to upload
    changed: tuple[str, ...]


def _git_blob_sha1(path: Path) -> str:
    """The git object id the Hub reports for a regular (non-LFS) file."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def changed_files(api, repo_id: str, folder: Path) -> list[str]:
    """Files whose content the repo's main branch does not already hold (LFS by sha256, others by git sha1)."""
    from huggingface_hub.hf_api import RepoFile

    remote = {entry.path: entry for entry in api.list_repo_tree(repo_id, recursive=True)
              if isinstance(entry, RepoFile)}
    changed = []
    for rel in local_files(folder):
        entry = remote.get(rel)
        if entry is None:
            changed.append(rel)
        elif entry.lfs is not None:
            if entry.lfs.sha256 != sha256_file(folder / rel):
                changed.append(rel)
        elif entry.blob_id != _git_blob_sha1(folder / rel):
            changed.append(rel)
    return changed


def push_folder(folder: Path, repo_id: str, *, token: str, private: bool, commit_message: str,
                commit_description: str = "", endpoint: str | None = None) -> PushOutcome:
    """Create `repo_id` if needed and commit the files of `folder` that differ from its main branch."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        changed = changed_files(api, repo_id, folder)
        if not changed:
            return PushOutcome(str(repo_url), None, ())
        # upload_folder skips LFS objects the Hub already stores and files whose oid did not change.
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 commit_description=commit_description, ignore_patterns=[MARKER_NAME])
    except OfflineModeIsEnabled as err:
        raise KitError("cannot publish while HF_HUB_OFFLINE is set: unset it (or set it to 0) and rerun") from err
    except httpx2.TransportError as err:
        raise KitError(f"cannot reach {endpoint} to publish {repo_id} ({type(err).__name__}: {err}); "
                       "check the network, then rerun: files the Hub already holds are not sent again") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        raise KitError(f"the Hub at {endpoint} refused the upload to {repo_id} (HTTP {status}): "
                       f"check that the token may write to that namespace. {err.server_message or ''}") from err
    return PushOutcome(str(repo_url), info.commit_url, tuple(changed))
