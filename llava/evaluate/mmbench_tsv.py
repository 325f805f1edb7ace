"""MMBench-format TSV files: write them (synthetic test sets) and read them back with validation.

The layout is VLMEvalKit's (evaluation.md §1): one row per circular pass, pass k of base question i
has index i + k*1_000_000, its options rotated so that new A = old option k, its answer relabelled,
and its `image` cell holding the base index instead of a second copy of the picture.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import os
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from llava.durable import write_text
from llava.errors import KitError
from llava.manifest import file_digest

PASS_OFFSET = 1_000_000
LETTERS = "ABCD"
REQUIRED_COLUMNS = ("index", "question", "A", "B", "answer", "category", "l2-category", "image")
TSV_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
               "l2-category", "split")
# VLMEvalKit resolves an `image` cell this short as a reference to another row (image_base.py:161-173).
IMAGE_REF_MAX_CHARS = 64
# Cells pandas reads as NaN by default (VLMEvalKit loads TSVs with plain `pd.read_csv`); an option
# with such a text would silently vanish, so the writer refuses it.
PANDAS_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


@dataclass(frozen=True)
class McqRow:
    """One row of the TSV (one circular pass of one question)."""

    index: int
    question: str
    hint: str | None
    options: dict[str, str]  # letter -> text, in letter order, absent letters left out
    answer: str
    category: str
    l2_category: str
    split: str
    image_index: int  # the row whose `image` cell holds the picture

    @property
    def question_index(self) -> int:
        """VLMEvalKit's g_index: the base question this pass belongs to."""
        return self.index % PASS_OFFSET


@dataclass
class McqFile:
    path: Path
    rows: list[McqRow]
    images: dict[int, str] = field(repr=False)  # row index -> base64 image

    def image(self, row: McqRow):
        """Decode the row's picture (RGB, as LLaVA_OneVision_HF feeds it)."""
        from llava.data.image_files import decode, to_rgb

        try:
            return to_rgb(decode(base64.b64decode(self.images[row.image_index])))
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError; UnusableImage a ValueError
            raise KitError(
                f"{self.path}: row index {row.image_index}, column 'image': not a readable image ({err})"
            ) from err

    def questions(self) -> dict[int, list[McqRow]]:
        """Circular groups: base question index -> its passes, in file order."""
        groups: dict[int, list[McqRow]] = {}
        for row in self.rows:
            groups.setdefault(row.question_index, []).append(row)
        return groups


def file_md5(path: str | os.PathLike) -> str:
    return file_digest(path, "md5")


def check_md5(path: Path, expected: str, where: str) -> None:
    """Refuse a TSV whose md5 differs from the suite's (VLMEvalKit would re-download it)."""
    actual = file_md5(path)
    if actual != expected:
        raise KitError(
            f"{path}: md5 {actual} does not match {expected} ({where}); this is not the benchmark file "
            "the reference tables were computed on, and VLMEvalKit would try to re-download it. "
            "Place the original TSV there, or pass --tsv with the right file"
        )


# ---------------------------------------------------------------- writing


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _rotation_safe(options: list[str]) -> bool:
    """VLMEvalKit leaves 'abnormal' questions un-rotated (tools.py CIRCULAR): an option that is a
    single capital letter, or one naming two or more different option letters as words."""
    letters = set(LETTERS[: len(options)])
    for text in options:
        words = set(text.replace(",", " ").split())
        single_capital = len(text.strip()) == 1 and text.strip() in string.ascii_uppercase
        if single_capital or len(words & letters) >= 2:
            return False
    return True


def _check_question(q: dict[str, Any], position: int) -> None:
    where = f"question #{position} (index {q.get('index')!r})"
    missing = [k for k in ("index", "question", "options", "answer", "category", "l2_category", "image") if k not in q]
    if missing:
        raise KitError(f"write_mmbench_tsv: {where} lacks {missing}")
    if not isinstance(q["index"], int) or not 0 <= q["index"] < PASS_OFFSET:
        raise KitError(f"write_mmbench_tsv: {where}: index must be an int in [0, {PASS_OFFSET})")
    if not 2 <= len(q["options"]) <= 4:
        raise KitError(f"write_mmbench_tsv: {where}: needs 2-4 options, got {len(q['options'])}")
    if q["answer"] not in LETTERS[: len(q["options"])]:
        raise KitError(f"write_mmbench_tsv: {where}: answer {q['answer']!r} is not one of its option letters")
    for text in [q["question"], *q["options"]]:
        if not isinstance(text, str) or text.strip() in PANDAS_NA_STRINGS:
            raise KitError(f"write_mmbench_tsv: {where}: text {text!r} would be read back as missing (NaN)")


def _pass_rows(q: dict[str, Any], k: int, image_cell: str) -> dict[str, Any]:
    """Pass k: new letter j shows old option (j + k) mod n; the answer follows its text."""
    options, n = q["options"], len(q["options"])
    rotated = [options[(j + k) % n] for j in range(n)]
    old_pos = LETTERS.index(q["answer"])
    row = {
        "index": q["index"] + k * PASS_OFFSET,
        "question": q["question"],
        "hint": q.get("hint") or "",
        "answer": LETTERS[(old_pos - k) % n],
        "category": q["category"],
        "image": image_cell,
        "l2-category": q["l2_category"],
        "split": q.get("split", "dev"),
    }
    row.update({LETTERS[j]: (rotated[j] if j < n else "") for j in range(4)})
    return row


def _say_unrotated(path: str | os.PathLike, indices: list[int], total: int) -> None:
    if indices:
        shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        print(f"{path}: {len(indices)} of {total} questions get no rotated passes (an option is a single capital "
              f"letter or names two option letters; VLMEvalKit does not rotate these either), scored on one pass: "
              f"index {shown}", file=sys.stderr)


def write_mmbench_tsv(questions: Iterable[dict[str, Any]], path: str | os.PathLike, *, circular: bool) -> Path:
    """Write questions as an MMBench TSV; with `circular`, add VLMEvalKit's rotated passes.

    Each question: index, question, hint (optional), options (2-4 strings), answer (letter),
    category, l2_category, image (PIL.Image), split (default "dev").
    """
    questions = list(questions)
    seen: set[int] = set()
    for position, q in enumerate(questions):
        _check_question(q, position)
        if q["index"] in seen:
            raise KitError(f"write_mmbench_tsv: index {q['index']} appears twice")
        seen.add(q["index"])
    rows = [_pass_rows(q, 0, _png_base64(q["image"])) for q in questions]
    if circular:
        for k in range(1, 4):
            rows += [_pass_rows(q, k, str(q["index"])) for q in questions
                     if k < len(q["options"]) and _rotation_safe(q["options"])]
        _say_unrotated(path, [q["index"] for q in questions if not _rotation_safe(q["options"])], len(questions))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TSV_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(Path(path), buffer.getvalue())


# ---------------------------------------------------------------- reading


def _cell(value: Any) -> str | None:
    """A TSV cell as text, None where pandas saw NaN (as VLMEvalKit's `pd.isna` checks do)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return str(value)


def _is_base64(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def _parse_row(path: Path, record: dict[str, Any], split_default: str) -> tuple[McqRow, str]:
    index = record["index"]

    def need(column: str) -> str:
        text = _cell(record.get(column))
        if text is None or not text.strip():
            raise KitError(f"{path}: row index {index}, column '{column}': empty")
        return text

    options = {c: t for c in string.ascii_uppercase if (t := _cell(record.get(c))) is not None}
    answer = need("answer")
    if answer not in options:
        raise KitError(
            f"{path}: row index {index}, column 'answer': {answer!r} is not one of its options {sorted(options)}"
        )
    row = McqRow(
        index=index, question=need("question"), hint=_cell(record.get("hint")), options=options,
        answer=answer, category=need("category"), l2_category=need("l2-category"),
        split=_cell(record.get("split")) or split_default, image_index=index,
    )
    return row, need("image")


def _resolve_images(path: Path, rows: list[McqRow], cells: list[str]) -> tuple[list[McqRow], dict[int, str]]:
    """Short cells name the row holding the picture; long ones must be base64."""
    images: dict[int, str] = {}
    for row, cell in zip(rows, cells):
        if len(cell) > IMAGE_REF_MAX_CHARS:
            if not _is_base64(cell):
                raise KitError(f"{path}: row index {row.index}, column 'image': not base64-encoded image data")
            images[row.index] = cell
    resolved = []
    for row, cell in zip(rows, cells):
        if row.index in images:
            resolved.append(row)
            continue
        target = cell.strip()
        if not target.lstrip("-").isdigit() or int(target) not in images:
            raise KitError(
                f"{path}: row index {row.index}, column 'image': {cell!r} is neither base64 image data "
                "nor the index of a row that holds an image"
            )
        resolved.append(McqRow(**{**row.__dict__, "image_index": int(target)}))
    return resolved, images


def read_mmbench_tsv(path: str | os.PathLike, *, split_default: str = "dev") -> McqFile:
    """Read an MMBench-format TSV the way VLMEvalKit does (pandas, default NaN rules) and validate it.

    Every fault is a KitError naming the row index and column.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise KitError(f"TSV {path} does not exist")
    try:
        frame = pd.read_csv(path, sep="\t", dtype={c: str for c in (*string.ascii_uppercase, "image", "answer")})
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise KitError(f"{path}: not a readable TSV ({err})") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise KitError(f"{path}: missing column(s) {missing}; an MMBench TSV needs {list(REQUIRED_COLUMNS)}")
    if not pd.api.types.is_integer_dtype(frame["index"]):
        raise KitError(f"{path}: column 'index' must hold integers only (found {frame['index'].dtype})")
    duplicates = sorted(set(frame["index"][frame["index"].duplicated()].tolist()))
    if duplicates:
        raise KitError(f"{path}: column 'index': duplicate values {duplicates[:10]}")
    parsed = [_parse_row(path, {k: v for k, v in rec.items()}, split_default)
              for rec in frame.to_dict(orient="records")]
    rows, images = _resolve_images(path, [p[0] for p in parsed], [p[1] for p in parsed])
    missing_base = sorted({r.question_index for r in rows} - {r.index for r in rows})
    if missing_base:
        raise KitError(f"{path}: rotated passes refer to base questions {missing_base[:10]} that have no row")
    return McqFile(path=path, rows=rows, images=images)
