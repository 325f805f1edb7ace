"""Run manifests: what a step read and wrote, so the next step can refuse inconsistent inputs.

Every step output folder holds `manifest.json`. It never carries secrets: only versions, hashes,
the git commit, the container image digest, timings and final metrics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from llava.durable import recover_folder, write_text
from llava.errors import KitError

MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = (
    "llava-kit", "torch", "transformers", "deepspeed", "accelerate", "tokenizers",
    "huggingface-hub", "safetensors", "pillow",
)
# Keys that must never land in a manifest, whatever a caller passes in `extra`. Matched as whole
# names or name parts (hf_token, HF_TOKEN, client_secret), so image_token, pad_token_id and
# tokenizer (recipe and config fields) are kept.
_SECRET_KEY = re.compile(r"(^|_)(token|hf_token|access_token|auth_token|api_token|hub_token|api_?key|secret|"
                         r"password|passwd|authorization|credentials?)$|secret|password|api_?key", re.IGNORECASE)
_VOCAB_TOKEN = re.compile(r"^(image|video|bos|eos|pad|unk|sep|cls|mask)_token", re.IGNORECASE)
# Values that look like credentials are redacted wherever they appear (an HF token is "hf_" + 30-odd chars).
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


class ManifestError(KitError):
    """An input folder lacks a manifest or its content disagrees with it."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks (md5 only where a format fixes it, e.g. VLMEvalKit's TSVs)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):  # no git (containers): the image bakes the commit in
        return os.environ.get("LLAVA_KIT_GIT_COMMIT")
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return os.environ.get("LLAVA_KIT_GIT_COMMIT")


def _is_secret_key(key: Any) -> bool:
    name = str(key)
    return bool(_SECRET_KEY.search(name)) and not _VOCAB_TOKEN.match(name)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if not _is_secret_key(k)}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub("<redacted>", value)
    return value


def hash_folder_files(folder: Path, patterns: tuple[str, ...] = ("*",)) -> dict[str, str]:
    """sha256 of every regular file below `folder` (the manifest itself excluded)."""
    files = {}
    for pattern in patterns:
        for path in sorted(folder.rglob(pattern)):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and rel != MANIFEST_NAME and rel not in files:
                files[rel] = sha256_file(path)
    return files


def write_manifest(
    folder: str | os.PathLike,
    kind: str,
    *,
    inputs: dict[str, str] | None = None,
    recipe_hash: str | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    started: float | None = None,
    file_patterns: tuple[str, ...] = ("*",),
) -> dict[str, Any]:
    """Write `manifest.json` atomically. `inputs` maps an input name to its manifest hash."""
    folder = Path(folder)
    body = {
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started": started,
        "finished": time.time(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "image_digest": os.environ.get("LLAVA_KIT_IMAGE_DIGEST"),
        "recipe_hash": recipe_hash,
        "inputs": dict(inputs or {}),
        "metrics": _scrub(dict(metrics or {})),
        "extra": _scrub(dict(extra or {})),
        "files": hash_folder_files(folder, file_patterns),
    }
    write_text(folder / MANIFEST_NAME, json.dumps(body, indent=2, sort_keys=True))
    return body


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a step output, after finishing a folder replace that a crash interrupted."""
    path = recover_folder(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{folder} has no {MANIFEST_NAME}: it was not produced by a finished llava-kit step "
            "(run the step that makes it, or `llava-kit prepare` for downloaded inputs)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from err


def manifest_hash(folder: str | os.PathLike) -> str:
    """A stable id of a step output: the hash of its manifest's file table."""
    body = read_manifest(folder)
    return sha256_text(json.dumps(body.get("files", {}), sort_keys=True))


def require_manifest(
    folder: str | os.PathLike, kind: str | tuple[str, ...] | None = None, verify_files: bool = True
) -> dict[str, Any]:
    """Refuse an input whose manifest is missing, of another kind, or whose files changed."""
    body = read_manifest(folder)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and body.get("kind") not in kinds:
        raise ManifestError(f"{folder}/{MANIFEST_NAME} is a {body.get('kind')!r} manifest; expected {kinds}")
    if verify_files:
        for rel, expected in body.get("files", {}).items():
            path = Path(folder) / rel
            if not path.is_file():
                raise ManifestError(f"{folder}: {rel} is listed in {MANIFEST_NAME} but missing")
            if sha256_file(path) != expected:
                raise ManifestError(f"{folder}: {rel} changed since {MANIFEST_NAME} was written (sha256 differs)")
    return body


def weights_sha256(checkpoint: str | os.PathLike) -> str:
    """One id for a checkpoint's weights: eval results and publishing are keyed on it."""
    shards = sorted(Path(checkpoint).glob("*.safetensors"))
    if not shards:
        raise ManifestError(f"{checkpoint} holds no *.safetensors weights")
    lines = "".join(f"{p.name}:{sha256_file(p)}\n" for p in shards)
    return sha256_text(lines)
