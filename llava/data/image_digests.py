"""`image_digests.tsv`: size and sha256 of every image a verified dataset uses; verify writes it, training checks it.

Content hashes rather than modification times: verify reads every byte anyway, and training hashes the
bytes it is about to decode (docs/data.md, "Images changed after verify", has the measured cost). An
mtime check would flag a faithful copy (`cp`, a volume copy) and pass a swapped file whose copier kept
the mtime (`rsync -t`, `tar`). Training skips a changed image's sample and names it in skips.jsonl.
"""

from __future__ import annotations

import os
from pathlib import Path

from llava.data.image_files import ImageStamp
from llava.durable import write_text
from llava.errors import KitError

DIGESTS_NAME = "image_digests.tsv"
_HEADER = "sha256\tbytes\tpath\n"


def write_image_digests(folder: str | os.PathLike, stamps: dict[str, ImageStamp]) -> Path:
    """One line per image path (as data.json names it), sorted, so the file's hash is stable."""
    lines = [f"{stamp.sha256}\t{stamp.size}\t{rel}\n" for rel, stamp in sorted(stamps.items())]
    return write_text(Path(folder) / DIGESTS_NAME, _HEADER + "".join(lines))


def read_image_digests(folder: str | os.PathLike) -> dict[str, ImageStamp] | None:
    """The recorded stamps, or None for a folder verified before the kit wrote them."""
    path = Path(folder) / DIGESTS_NAME
    if not path.is_file():
        return None
    stamps = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if number == 1:
                continue
            fields = line.rstrip("\n").split("\t", 2)
            if len(fields) != 3 or not fields[1].isdigit():
                raise KitError(f"{path}, line {number}: expected 'sha256<TAB>bytes<TAB>path': "
                               "run `llava-kit prepare verify` on the folder again")
            stamps[fields[2]] = ImageStamp(int(fields[1]), fields[0])
    return stamps
