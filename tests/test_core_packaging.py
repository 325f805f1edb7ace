"""The wheel carries the recipes and suites: an installed (non-editable) kit finds them from any folder.

The full check, `pip install .` into a fresh virtual environment and `llava-kit smoke` in another folder,
costs minutes (a torch install); docs/mechanisms.md gives its command. Here the wheel is built once and
unpacked beside the test environment's dependencies instead, which exercises the same lookup.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LOOKUPS = """
import sys
from pathlib import Path
import llava
from llava.evaluate.suite import load_suite
from llava.profiles import apply_profile
from llava.recipe import load_recipe
from llava.train.deepspeed_profiles import load_deepspeed_config

assert Path(llava.__file__).is_relative_to(sys.argv[1]), llava.__file__
recipe = apply_profile(load_recipe("stage2"), "fast")
smoke = load_recipe("stages/smoke/stage1.yaml")
suite = load_suite("eval/mmbench_dev_en.yaml")
print(recipe.name, recipe.profile, smoke.name, suite.dataset, sorted(load_deepspeed_config("seed"))[:1])
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(REPO)], check=True, capture_output=True, timeout=600)
    return next(out.glob("llava_kit-*.whl"))


def test_the_wheel_holds_every_recipe_and_suite(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("stages", "eval"):
        files = [p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*") if p.is_file()]
        assert files, folder
        missing = [f for f in files if f"llava/resources/{f}" not in names]
        assert not missing, f"not in {wheel.name}: {missing}"
    # the smoke's instruct LLM stand-in travels as package data too
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"llava/resources/tiny-instruct-qwen2/{name}" in names, name


def test_an_installed_kit_finds_its_recipes_from_another_folder(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", LOOKUPS, str(target)], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:4] == ["stage2", "fast", "stage1", "MMBench_DEV_EN"]


def test_smoke_names_the_extras_a_plain_install_lacks(tmp_path):
    """`pip install .` alone has no accelerate: smoke says which extras to add, exit 2, no traceback."""
    code = ("import sys; sys.modules['accelerate'] = None; from llava.cli import main; "
            f"sys.exit(main(['smoke', '--out', {str(tmp_path / 'smoke')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "needs the train extra" in done.stderr and "llava-kit[train,eval]" in done.stderr
    assert not (tmp_path / "smoke").exists()  # refused before anything was built
