"""kill -9 at every step of the durable-write sequence leaves the old content or the new one, never neither.

Each case writes an "old" version in this process, then a child process writes the "new" one and is
SIGKILLed at one step (LLAVA_KIT_TEST_KILL_IN_WRITE); the next reader (read_manifest for a step output,
the next publish for a repo folder) must then find exactly the version the step implies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llava.durable import FILE_STEPS, FOLDER_STEPS, recover_folder, replace_folder, write_text
from llava.manifest import read_manifest, write_manifest
from llava.owned import MARKER_NAME
from llava.publish.repo_folder import Extras, assemble

# The first step at which the new version is the one a reader must see.
FIRST_NEW = {"file": "file.renamed", "folder": "folder.renamed"}
CHECKPOINT = {"model.safetensors": "w", "config.json": "{}", "generation_config.json": "{}",
              "tokenizer.json": "{}", "chat_template.jinja": "t", "preprocessor_config.json": "{}"}

CHILD = """
import sys
from pathlib import Path
from llava.durable import replace_folder, write_text
from llava.manifest import write_manifest
from llava.publish.repo_folder import Extras, assemble

kind, target = sys.argv[1], Path(sys.argv[2])
if kind == "file":
    write_text(target, "new")
elif kind == "folder":
    staged = target.with_name(target.name + ".tmp")
    staged.mkdir()
    (staged / "weights.bin").write_text("new")
    write_manifest(staged, "test", extra={"version": "new"})
    replace_folder(staged, target, kind="test")
else:
    assemble(Path(sys.argv[3]), target, "new", Extras({}))
"""


def _killed_child(step: str, *args: Path) -> None:
    env = {**os.environ, "LLAVA_KIT_TEST_KILL_IN_WRITE": step}
    done = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGKILL, f"not killed at {step}: rc {done.returncode}\n{done.stderr}"


def _expected(step: str, steps: tuple[str, ...], first_new: str) -> str:
    return "new" if steps.index(step) >= steps.index(first_new) else "old"


@pytest.mark.parametrize("step", FILE_STEPS)
def test_a_file_is_old_or_new_after_kill(tmp_path, step):
    target = tmp_path / "results.json"
    write_text(target, "old")
    _killed_child(step, "file", target)
    assert target.read_text() == _expected(step, FILE_STEPS, FIRST_NEW["file"])
    write_text(target, "again")  # a leftover temp file never blocks the next write
    assert target.read_text() == "again"


def _old_folder(final: Path) -> None:
    staged = final.with_name(final.name + ".tmp")
    staged.mkdir()
    (staged / "weights.bin").write_text("old")
    write_manifest(staged, "test", extra={"version": "old"})
    replace_folder(staged, final, kind="test")


@pytest.mark.parametrize("step", FOLDER_STEPS)
def test_a_step_output_folder_is_old_or_new_after_kill(tmp_path, step):
    final = tmp_path / "stage2"
    _old_folder(final)
    _killed_child(step, "folder", final)
    if step == "folder.aside":
        assert not final.exists()  # the moment with no final folder is real: the reader must recover
    version = read_manifest(final)["extra"]["version"]
    assert version == _expected(step, FOLDER_STEPS, FIRST_NEW["folder"])
    assert (final / "weights.bin").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "stage2.tmp") == ["stage2"]


@pytest.mark.parametrize("step", FOLDER_STEPS)
def test_a_publish_folder_is_old_or_new_after_kill(tmp_path, step):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    for name, text in CHECKPOINT.items():
        (checkpoint / name).write_text(text)
    out = tmp_path / "repo"
    assemble(checkpoint, out, "old", Extras({}))
    _killed_child(step, "publish", out, checkpoint)
    recover_folder(out)  # what the next `publish` does first
    assert (out / "README.md").read_text() == _expected(step, FOLDER_STEPS, FIRST_NEW["folder"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*CHECKPOINT, "README.md", MARKER_NAME])
    assemble(checkpoint, out, "again", Extras({}))  # and the next publish replaces it as usual
    assert (out / "README.md").read_text() == "again"
