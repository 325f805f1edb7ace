"""A fresh box has no benchmark TSV: eval fetches the suite's file from its URL into $LMUData.

The loopback archive server (tests/archive_server.py) stands in for VLMEvalKit's download site; the
file is an MMBench-format TSV written by the kit's own writer.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from archive_server import ArchiveServer
from llava.errors import KitError
from llava.evaluate.mmbench_tsv import read_mmbench_tsv, write_mmbench_tsv
from llava.evaluate.service import resolve_tsv
from llava.evaluate.suite import load_suite
from test_eval_mmbench import question

NAME = "Fetch_MMBench_Test.tsv"


@pytest.fixture()
def tsv_bytes(tmp_path: Path) -> bytes:
    rng = random.Random(3)
    questions = [question(i, rng, size=96) for i in range(6)]  # noise pictures: about 220 kB in all
    path = write_mmbench_tsv(questions, tmp_path / "source.tsv", circular=True)
    return path.read_bytes()


def _suite(folder: Path, url: str, md5: str) -> Path:
    body = {"name": "fetch_test", "dataset": "Fetch_MMBench_Test", "circular": True,
            "tsv": {"file": NAME, "md5": md5, "url": url}}
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _fetch(tmp_path: Path, monkeypatch, url: str, md5: str) -> Path:
    lmudata = tmp_path / "LMUData"
    monkeypatch.setenv("LMUData", str(lmudata))
    suite_path = _suite(tmp_path, url, md5)
    return resolve_tsv(load_suite(suite_path), suite_path, None)


def test_missing_tsv_is_fetched_into_lmudata_and_resumes_after_a_cut(tmp_path, monkeypatch, tsv_bytes) -> None:
    with ArchiveServer({f"/bench/{NAME}": tsv_bytes}) as server:
        server.cuts[f"/bench/{NAME}"] = [70_000]  # the first GET hangs up after 70 kB
        path = _fetch(tmp_path, monkeypatch, f"{server.url}/bench/{NAME}", hashlib.md5(tsv_bytes).hexdigest())
        ranges = server.gets(f"/bench/{NAME}")
        assert len(ranges) == 2 and ranges[0] is None  # the second GET asks only for the tail
        have = int(ranges[1].removeprefix("bytes=").rstrip("-"))
        assert 65_536 <= have <= 70_000 < len(tsv_bytes)
        assert path == tmp_path / "LMUData" / NAME and path.read_bytes() == tsv_bytes
        assert not (tmp_path / "LMUData" / f"{NAME}.part").exists()
        assert len(read_mmbench_tsv(path).rows) == len(read_mmbench_tsv(tmp_path / "source.tsv").rows)
        server.requests.clear()
        assert _fetch(tmp_path, monkeypatch, f"{server.url}/bench/{NAME}",
                      hashlib.md5(tsv_bytes).hexdigest()) == path
        assert server.requests == []  # present and right: no request at all


def test_a_download_with_another_md5_is_refused_and_set_aside(tmp_path, monkeypatch, tsv_bytes) -> None:
    served = tsv_bytes + b"\n"
    with ArchiveServer({f"/bench/{NAME}": served}) as server:
        with pytest.raises(KitError) as refused:
            _fetch(tmp_path, monkeypatch, f"{server.url}/bench/{NAME}", hashlib.md5(tsv_bytes).hexdigest())
    bad = tmp_path / "LMUData" / f"{NAME}.bad-md5"
    message = str(refused.value)
    assert message.startswith(f"{bad}: the TSV downloaded from {server.url}/bench/{NAME} has md5 "
                              f"{hashlib.md5(served).hexdigest()}")
    assert f"not {hashlib.md5(tsv_bytes).hexdigest()}" in message and "tsv.md5" in message
    assert bad.read_bytes() == served
    assert not (tmp_path / "LMUData" / NAME).exists()


def test_a_wrong_file_already_there_is_refused_untouched(tmp_path, monkeypatch, tsv_bytes) -> None:
    placed = tmp_path / "LMUData" / NAME
    placed.parent.mkdir()
    placed.write_bytes(b"not the benchmark\n")
    with ArchiveServer({f"/bench/{NAME}": tsv_bytes}) as server:
        with pytest.raises(KitError, match=rf"^{placed}: md5 [0-9a-f]{{32}} does not match"):
            _fetch(tmp_path, monkeypatch, f"{server.url}/bench/{NAME}", hashlib.md5(tsv_bytes).hexdigest())
        assert server.requests == []
    assert placed.read_bytes() == b"not the benchmark\n"


def test_cli_refusal_is_one_line_naming_the_file(tmp_path, tsv_bytes) -> None:
    lmudata = tmp_path / "LMUData"
    with ArchiveServer({f"/bench/{NAME}": b"wrong bytes\n"}) as server:
        suite_path = _suite(tmp_path, f"{server.url}/bench/{NAME}", hashlib.md5(tsv_bytes).hexdigest())
        done = subprocess.run([sys.executable, "-m", "llava.cli", "eval", str(tmp_path / "ckpt"), "--suite",
                               str(suite_path), "--out", str(tmp_path / "out")],
                              env={**os.environ, "LMUData": str(lmudata)}, capture_output=True, text=True,
                              timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{lmudata / NAME}.bad-md5: the TSV downloaded from" in errors[0]
    assert "Traceback" not in done.stderr


def test_the_mmbench_suite_names_vlmevalkits_url_and_md5() -> None:
    suite = load_suite("eval/mmbench_dev_en.yaml")
    assert suite.tsv.file == "MMBench_DEV_EN.tsv" and suite.tsv.md5 == "b6caf1133a01c6bb705cf753bb527ed8"
    assert suite.tsv.url == "https://opencompass.openxlab.space/utils/benchmarks/MMBench/MMBench_DEV_EN.tsv"
