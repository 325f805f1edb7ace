"""Every bad input a user can type is a message naming that input, exit code 2, never a traceback.

The recipe and environment cases run the installed CLI as a subprocess (what a user runs); the render
cases call `llava.cli.main` in this process (same code path, without paying transformers' import per
case), where an uncaught exception would fail the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from llava.cli import main
from llava.recipe import STAGES_DIR

SMOKE2 = str(STAGES_DIR / "smoke" / "stage2.yaml")
SMOKE1 = str(STAGES_DIR / "smoke" / "stage1.yaml")


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llava.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# (arguments, extra environment, what the message must name)
COMMAND_LINE_CASES = {
    "set-typo": (["train", SMOKE2, "--set", "training.max_step=5"], {},
                 ["command line", "--set training.max_step=5", "training.max_step", "did you mean training.max_steps"]),
    "set-section-typo": (["train", SMOKE2, "--set", "trainig.max_steps=5"], {},
                         ["command line", "trainig", "did you mean training"]),
    "set-below-a-value": (["train", SMOKE2, "--set", "data.path.x=1"], {},
                          ["command line", "--set data.path.x=1", "data.path is a value"]),
    "set-wrong-type": (["train", SMOKE2, "--set", "training.grad_accum=four"], {},
                       ["command line", "training.grad_accum", "'four'"]),
    "set-no-equals": (["train", SMOKE2, "--set", "training.max_steps"], {}, ["--set 'training.max_steps'", "key.sub=value"]),
    "set-under-nproc-2": (["train", SMOKE2, "--nproc", "2", "--set", "training.max_step=5"], {},
                          ["command line", "training.max_step"]),
    "num-gpus-word": (["train", SMOKE2], {"NUM_GPUS": "two"}, ["NUM_GPUS='two'"]),
}


@pytest.mark.parametrize("case", COMMAND_LINE_CASES)
def test_command_line_mistakes_are_named_before_anything_heavy(case):
    args, env, named = COMMAND_LINE_CASES[case]
    started = time.monotonic()
    done = cli(*args, env=env)
    seconds = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1, done.stderr
    for text in named:
        assert text in done.stderr, (text, done.stderr)
    assert "torchrun" not in done.stderr and "ChildFailedError" not in done.stderr
    assert seconds < 60, f"{case} took {seconds:.1f} s"  # measured ~0.5 s; the real proof is the next test


def test_a_bad_override_is_reported_without_importing_torch():
    """The '< 2 s' promise as a fact that a loaded machine cannot fake: torch is never imported."""
    code = ("import sys; from llava.cli import main; rc = main(['train', %r, '--set', 'training.max_step=5']); "
            "print('torch' in sys.modules, rc)" % SMOKE2)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "2"], done.stdout + done.stderr


def test_a_file_typo_is_blamed_on_the_file(tmp_path):
    body = open(SMOKE2).read().replace("  grad_accum: 1", "  grad_acum: 1")
    path = tmp_path / "mine.yaml"
    path.write_text(body)
    done = cli("train", str(path), "--set", "training.max_steps=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{path}: invalid recipe" in done.stderr and "command line" not in done.stderr
    assert "training.grad_acum: unknown key; did you mean training.grad_accum?" in done.stderr


def test_a_bad_num_gpus_breaks_no_other_verb():
    done = cli("--help", env={"NUM_GPUS": "two"})
    assert done.returncode == 0 and "train" in done.stdout, done.stderr
    assert cli("doctor", "--help", env={"NUM_GPUS": "two"}).returncode == 0


def test_doctor_engine_without_the_docker_sdk():
    """`sys.modules['docker'] = None` is how Python marks a package as not importable."""
    code = "import sys; sys.modules['docker'] = None; from llava.cli import main; sys.exit(main(['doctor', '--engine']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "doctor --engine" in done.stderr and "docker SDK" in done.stderr and "llava-kit[containers]" in done.stderr


GOOD_TURNS = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
RENDER_CASES = {
    "missing-image": ({"id": "a", "image": "nowhere.png", "conversations": GOOD_TURNS}, [],
                      ["nowhere.png", "missing image"]),
    "no-conversations": ({"id": "b", "image": "x.png"}, [], ["empty conversation", "conversations"]),
    "turn-without-value": ({"id": "c", "conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, [],
                           ["turn 1 has an empty value"]),
    "bad-image-size": ({"id": "d", "image": "x.png", "conversations": GOOD_TURNS}, ["--image-size", "60*40"],
                       ["--image-size '60*40'", "WIDTHxHEIGHT"]),
    "two-tags-one-image": ({"id": "e", "image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "yes"}]}, [],
                           ["2 <image> tags, expected 1"]),
    "not-json": ("{not json", [], ["cannot read sample"]),
}


@pytest.mark.parametrize("case", RENDER_CASES)
def test_render_bad_samples(case, tiny_world, tmp_path, capsys):
    record, extra, named = RENDER_CASES[case]
    sample = tmp_path / "sample.json"
    sample.write_text(record if isinstance(record, str) else json.dumps(record))
    rc = main(["render", "--recipe", SMOKE1, "--sample", str(sample), "--home", str(tiny_world), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(sample) in err or "--image-size" in err, err
    for text in named:
        assert text in err, (text, err)
