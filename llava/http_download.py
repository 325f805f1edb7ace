"""Resumable plain-HTTP downloads: `<file>.part` grows by Range requests until it holds the whole file.

Used for the published files that are not on the Hub: the stage-2 image archives and the benchmark TSV.
A crash or a cut connection keeps the bytes already on disk; the next attempt (or the next run) asks
only for the missing tail. The caller checks the complete `.part` (size, checksum) and renames it.

Hand-written on purpose: the field's downloaders either do not resume (pooch, urllib) or only speak
the Hub's protocol (huggingface_hub); this is a plain Range GET over `requests`.
"""

from __future__ import annotations

from pathlib import Path

from llava.errors import KitError

CHUNK = 1 << 16  # a dropped connection loses at most the chunk in flight (urllib3 drops a short read)
ATTEMPTS = 3  # per file and run: a cut connection resumes from the bytes already on disk


def part_path(path: Path) -> Path:
    """Where the download of `path` collects its bytes until it is complete and checked."""
    return path.with_name(path.name + ".part")


def bytes_on_disk(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def remote_size(url: str, what: str, fix: str, *, required: bool = True) -> int | None:
    """The size the server announces for `url` (HEAD, Content-Length); `fix` says what the user can do.
    None when it announces none and the caller has another size to go by (`required=False`)."""
    import requests

    try:
        reply = requests.head(url, allow_redirects=True, timeout=60)
        reply.raise_for_status()
    except requests.RequestException as err:
        raise KitError(f"{what} {url} cannot be reached: {err}; {fix}") from err
    length = reply.headers.get("Content-Length")
    if not length:
        if not required:
            return None
        raise KitError(f"{what} {url} announces no size (Content-Length): cannot check the download")
    return int(length)


def _append_tail(url: str, part: Path, size: int, what: str) -> None:
    """Append the missing tail of `url` to `part` (one GET with a Range when part of it is there)."""
    import requests

    have = bytes_on_disk(part)
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=60) as reply:
        if reply.status_code == 416:
            raise KitError(f"{what} {url} has no bytes past {have}, but {size} are expected: the file changed "
                           f"or its recorded size is wrong; fix the size, or delete {part} to start over")
        reply.raise_for_status()
        if have and reply.status_code != 206:
            raise KitError(f"{what} {url} does not support resuming (HTTP {reply.status_code} to a Range "
                           f"request): delete {part} to download it from the start")
        with open(part, "ab") as out:
            for chunk in reply.iter_content(CHUNK):
                out.write(chunk)


def fetch_to_part(url: str, part: Path, size: int, what: str) -> Path:
    """Fill `part` with the `size` bytes of `url`, resuming what is there; returns `part` once complete."""
    import requests

    part.parent.mkdir(parents=True, exist_ok=True)
    reason = None
    for _ in range(ATTEMPTS):
        try:
            _append_tail(url, part, size, what)
        except (requests.RequestException, OSError) as err:
            reason = err
        if bytes_on_disk(part) >= size:
            break
    have = bytes_on_disk(part)
    if have > size:
        raise KitError(f"download of {url} into {part} has {have} bytes, more than the {size} expected: the "
                       f"file changed or its recorded size is wrong; fix it, or delete {part} to start over")
    if have < size:
        raise KitError(f"download of {url} into {part} stopped at {have} of {size} bytes "
                       f"({reason or 'the server closed the connection'}): run the same command again to resume "
                       "from there (the bytes already on disk are kept)")
    return part
