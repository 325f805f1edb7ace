#!/usr/bin/env python3
"""Refresh the base-image digests in docker/digests.env and copy them into the Dockerfiles.

Maintainer tool, run where the registries are reachable:

    python scripts/refresh-digests.py            # resolve every tag again, rewrite digests.env + Dockerfiles
    python scripts/refresh-digests.py --check    # exit 1 when a tag now points elsewhere (writes nothing)
    python scripts/refresh-digests.py --sync-only  # no network: copy digests.env into `ARG NAME=` defaults

Each line of docker/digests.env is `NAME=repository:tag@sha256:<digest>`; the Dockerfiles carry the same
reference as the default of `ARG NAME=` (that is what a plain `docker build` uses). The digest is the
one of the tag's manifest list (index), so one pin covers every platform.

The registry client is hand-written on the standard library, because the script must run on a bare
maintainer box: it speaks the Docker Registry HTTP API v2 (a HEAD of /v2/<repo>/manifests/<tag>, and
the Bearer-token dance that a 401's WWW-Authenticate header asks for).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERHUB = "https://registry-1.docker.io"
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
REF = re.compile(r"^(?P<repo>[^@:\s]+(?::\d+)?(?:/[^@:\s]+)*):(?P<tag>[\w][\w.-]*)(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def read_env(path: Path) -> dict[str, str]:
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not REF.match(value):
            raise SystemExit(f"{path}:{number}: expected NAME=repository:tag@sha256:<digest>, got {line!r}")
        entries[name] = value
    return entries


def write_env(path: Path, entries: dict[str, str]) -> None:
    """Keep the comments, replace the values; temp file + rename so a crash leaves the old file."""
    out = []
    for line in path.read_text().splitlines():
        name = line.split("=", 1)[0].strip()
        out.append(f"{name}={entries[name]}" if not line.lstrip().startswith("#") and name in entries else line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(out) + "\n")
    tmp.replace(path)


def split_repo(repo: str, override: str | None) -> tuple[str, str]:
    """(registry base URL, repository path) with Docker Hub's implicit host and `library/` prefix."""
    first, _, rest = repo.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        base, path = f"https://{first}", rest
    else:
        base, path = DOCKERHUB, repo if rest else f"library/{repo}"
    return (override or base), path


def _bearer_token(challenge: str) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
    with urllib.request.urlopen(f"{fields['realm']}?{query}", timeout=30) as reply:
        body = json.load(reply)
    return body.get("token") or body["access_token"]


def resolve_digest(repo: str, tag: str, registry: str | None = None) -> str:
    """The sha256 digest the registry serves for repo:tag right now."""
    base, path = split_repo(repo, registry)
    url = f"{base}/v2/{path}/manifests/{tag}"
    headers = {"Accept": ACCEPT}
    for _ in range(2):
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                digest = reply.headers.get("Docker-Content-Digest", "")
                if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                    raise SystemExit(f"{url}: registry sent no usable Docker-Content-Digest header")
                return digest
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code != 401 or not challenge.startswith("Bearer") or "Authorization" in headers:
                raise SystemExit(f"{url}: HTTP {err.code} {err.reason}") from err
            headers["Authorization"] = f"Bearer {_bearer_token(challenge)}"
    raise SystemExit(f"{url}: not authorised")


def sync_dockerfiles(root: Path, entries: dict[str, str]) -> list[Path]:
    """Set `ARG NAME=...` defaults in docker/*Dockerfile to the digests.env values; return changed files."""
    changed = []
    for dockerfile in sorted((root / "docker").glob("*Dockerfile")):
        text = dockerfile.read_text()
        new = text
        for name, ref in entries.items():
            new = re.sub(rf"^ARG {name}=\S*$", f"ARG {name}={ref}", new, flags=re.MULTILINE)
        if new != text:
            dockerfile.write_text(new)
            changed.append(dockerfile)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="report stale digests, write nothing")
    mode.add_argument("--sync-only", action="store_true", help="no network: copy digests.env into the Dockerfiles")
    parser.add_argument("--registry", help="use this registry base URL for every image (mirrors, tests)")
    args = parser.parse_args(argv)

    env_file = args.root / "docker" / "digests.env"
    entries = read_env(env_file)
    stale = {}
    if not args.sync_only:
        for name, ref in entries.items():
            parts = REF.match(ref)
            digest = resolve_digest(parts["repo"], parts["tag"], args.registry)
            if digest != parts["digest"]:
                stale[name] = f"{parts['repo']}:{parts['tag']}@{digest}"
                print(f"{name}: {parts['repo']}:{parts['tag']} {parts['digest'] or '(unpinned)'} -> {digest}")
            else:
                print(f"{name}: {parts['repo']}:{parts['tag']} up to date")
    if args.check:
        return 1 if stale else 0
    if stale:
        entries.update(stale)
        write_env(env_file, entries)
    for path in sync_dockerfiles(args.root, entries):
        print(f"updated {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
