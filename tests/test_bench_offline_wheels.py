"""The wheels carried to a GPU host without internet are the versions llava-kit pins, so its GPU numbers
describe this stack."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(lines: list[str]) -> dict[str, str]:
    found = (re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s;#]+).*", line) for line in lines)
    return {re.sub(r"[-_.]+", "-", m[1]).lower(): m[2] for m in found if m}


def test_offline_wheels_match_the_package_pins():
    carried = pins((ROOT / "benchmarks" / "offline-wheels.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins([*project["dependencies"], *sum(project["optional-dependencies"].values(), [])])
    shared = carried.keys() & declared.keys()
    assert {"transformers", "tokenizers", "pydantic", "deepspeed"} <= shared
    assert {name: carried[name] for name in shared} == {name: declared[name] for name in shared}
    # pydantic-core is pinned exactly by pydantic: carry the one installed beside it
    assert carried["pydantic-core"] == version("pydantic-core")


def test_offline_liger_is_the_gpu_images():
    carried = pins((ROOT / "benchmarks" / "offline-wheels.txt").read_text().splitlines())
    image = pins((ROOT / "docker" / "requirements-cuda.lock").read_text().splitlines())
    assert carried["liger-kernel"] == image["liger-kernel"]
