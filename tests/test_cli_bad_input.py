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


# ---- Outputs the kit does not own, and record checks shared by verify, render and train ----------------
# `train --set output=...` may replace only an earlier stage output; anything else at the path, and any
# output that is, holds or sits inside one of the run's inputs, is refused before any weights load.
# Each case runs in a throw-away home whose files are hashed before and after: nothing may change.

def _user_home(root):
    """A volume layout with a kit-written stage-1 checkpoint, another run's checkpoint and a user's own data."""
    from llava.manifest import write_manifest
    from llava.owned import mark_owned

    for folder in ("models/tiny-qwen2", "models/tiny-siglip", "datasets/stage1/images", "datasets/stage1_5/images",
                   "mine/images", "thesis"):
        (root / folder).mkdir(parents=True)
    for stage in ("stage1", "stage1_5"):
        (root / "datasets" / stage / "data.json").write_text(json.dumps([{"id": "a", "conversations": GOOD_TURNS}]))
    (root / "mine" / "data.json").write_text(json.dumps([{"id": "a", "conversations": GOOD_TURNS}]))
    (root / "thesis" / "thesis.txt").write_text("four years of work\n")
    (root / "notes.md").write_text("my notes\n")
    for name in ("stage1", "other-run"):
        checkpoint = mark_owned(root / "checkpoints" / name, "checkpoint")
        (checkpoint / "model.safetensors").write_bytes(os.urandom(256))
        (checkpoint / "config.json").write_text("{}")
        write_manifest(checkpoint, "checkpoint", extra={"stage": name})
    mark_owned(root / "an-eval", "eval")
    (root / "an-eval" / "results.json").write_text("{}")
    return root


def _hashes(root) -> dict[str, str]:
    """Every file under `root` (the refused run's own log folder runs/ aside) -> sha256."""
    from llava.manifest import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != "runs"}


# case -> (stage, overrides ({home} is the throw-away home), what the message must name)
OUTPUT_CASES = {
    "user-folder": ("stage1", ["output={home}/thesis"],
                    ["{home}/thesis", "not written by llava-kit", "thesis.txt", "choose a new or empty folder"]),
    "checkpoints-root": ("stage1_5", ["output={home}/checkpoints"],
                         ["{home}/checkpoints", "contains this run's input init.from_checkpoint", "{home}/checkpoints/stage1"]),
    "regular-file": ("stage1", ["output={home}/notes.md"], ["{home}/notes.md", "is an existing file"]),
    "inside-the-input-checkpoint": ("stage1_5", ["output={checkpoints}/stage1/next"],
                                    ["{home}/checkpoints/stage1/next", "is inside this run's input init.from_checkpoint"]),
    "holds-the-data": ("stage1", ["data.path={home}/mine/data.json", "data.image_folder={home}/mine/images",
                                  "data.require_manifest=false", "output={home}/mine"],
                       ["{home}/mine", "contains this run's input data.path", "{home}/mine/data.json"]),
    "is-the-image-folder": ("stage1", ["data.path={home}/mine/data.json", "data.image_folder={home}/mine/images",
                                       "data.require_manifest=false", "output={home}/mine/images"],
                            ["{home}/mine/images", "is this run's input data.image_folder"]),
    "another-kind-of-output": ("stage1", ["output={home}/an-eval"],
                               ["{home}/an-eval", "holds a llava-kit eval output, not a checkpoint"]),
}


@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_train_never_replaces_what_it_does_not_own(case, tmp_path, monkeypatch, capsys):
    stage, overrides, named = OUTPUT_CASES[case]
    home = _user_home(tmp_path / "home")
    monkeypatch.setenv("LLAVA_KIT_HOME", str(home))
    before = _hashes(home)
    args = [f"--set={o.replace('{home}', str(home))}" for o in overrides]
    rc = main(["train", str(STAGES_DIR / "smoke" / f"{stage}.yaml"), *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    for text in named:
        assert text.replace("{home}", str(home)) in err, (text, err)
    assert _hashes(home) == before  # nothing deleted, renamed or changed
    assert not list(home.rglob("*.llava-kit-old")) and not list(home.rglob("*.llava-kit-new"))


def test_the_cli_refuses_a_users_folder_as_output(tmp_path):
    """The same refusal from the installed CLI, as a user runs it."""
    home = _user_home(tmp_path / "home")
    before = _hashes(home)
    done = cli("train", SMOKE1, f"--set=output={home / 'thesis'}", env={"LLAVA_KIT_HOME": str(home)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{home / 'thesis'} already exists and was not written by llava-kit" in done.stderr
    assert _hashes(home) == before


def test_train_refuses_duplicate_ids_in_an_unverified_file(tmp_path, monkeypatch, capsys):
    home = _user_home(tmp_path / "home")
    records = [{"id": sample_id, "conversations": GOOD_TURNS} for sample_id in ("a", "b", "a", "c", "b")]
    (home / "mine" / "data.json").write_text(json.dumps(records))
    monkeypatch.setenv("LLAVA_KIT_HOME", str(home))
    rc = main(["train", SMOKE1, f"--set=data.path={home / 'mine' / 'data.json'}",
               f"--set=data.image_folder={home / 'mine' / 'images'}", "--set=data.require_manifest=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"{home / 'mine' / 'data.json'}: 2 sample ids are used more than once (a, b)" in err


NUMBER_CASES = {  # nonsense numbers stop at the recipe, before torch loads
    "max-steps-negative": ("training.max_steps=-5", "training.max_steps: Input should be greater than or equal to -1"),
    "max-steps-zero": ("training.max_steps=0", "max_steps 0 would train nothing"),
    "lr-negative": ("training.learning_rate=-1e-5", "training.learning_rate: Input should be greater than 0"),
    "batch-zero": ("training.per_device_batch=0", "training.per_device_batch: Input should be greater than 0"),
    "warmup-over-one": ("training.warmup_ratio=3", "training.warmup_ratio: Input should be less than or equal to 1"),
    "max-length-zero": ("training.model_max_length=0", "training.model_max_length: Input should be greater than 0"),
    "epochs-negative": ("training.epochs=-1", "training.epochs: Input should be greater than 0"),
    "name-is-a-path": ("name=../../elsewhere", "name: String should match pattern"),
}


@pytest.mark.parametrize("case", NUMBER_CASES)
def test_nonsense_numbers_are_refused_by_the_recipe(case, capsys):
    override, named = NUMBER_CASES[case]
    rc = main(["train", SMOKE2, "--set", override])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"--set {override}" in err and named in err, err


# ---- images, `generate`, `eval --external`: each bad input is exit 2 naming it, and no user file changes ----

def _file_hashes(*paths) -> dict[str, str]:
    import hashlib
    from pathlib import Path
    files = [p for path in map(Path, paths) for p in ([path] if path.is_file() else sorted(path.rglob("*")))
             if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def generate_inputs(stage1_run, tmp_path_factory):
    """A good checkpoint, one with its weights cut short, a bomb and a good image."""
    import shutil
    from image_files_samples import bomb_png
    _, layout, result = stage1_run
    root = tmp_path_factory.mktemp("generate-inputs")
    truncated = shutil.copytree(result.output, root / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return {"CKPT": str(result.output), "CUT": str(truncated), "BOMB": str(bomb_png(root / "bomb.png")),
            "IMAGE": str(layout.datasets / "stage1" / "images" / "stage1-00000.png"), "MISSING": str(root / "no.png"),
            "TSV": str(layout.datasets / "eval" / "shapes_colour.tsv"), "OUT": str(root / "eval-out")}


# (arguments with {NAME} from generate_inputs, what the message must name)
INFERENCE_CASES = {
    "generate-missing-image": (["generate", "{CKPT}", "--image", "{MISSING}", "--prompt", "Colour?"],
                               ["--image {MISSING}: missing image"]),
    "generate-bomb": (["generate", "{CKPT}", "--image", "{BOMB}", "--prompt", "Colour?"],
                      ["--image {BOMB}: decompression bomb", "400000000 pixels"]),
    "generate-empty-prompt": (["generate", "{CKPT}", "--image", "{IMAGE}", "--prompt", " "], ["--prompt is empty"]),
    "generate-image-tag": (["generate", "{CKPT}", "--image", "{IMAGE}", "--prompt", "<image>\nColour?"],
                           ["--prompt contains <image>"]),
    "generate-not-a-folder": (["generate", "{MISSING}", "--prompt", "Hi"], ["checkpoint {MISSING} is not a folder"]),
    "generate-truncated-weights": (["generate", "{CUT}", "--image", "{IMAGE}", "--prompt", "Colour?"],
                                   ["{CUT}/model.safetensors is not a complete safetensors file"]),
    "eval-external-truncated-weights": (["eval", "{CUT}", "--suite", "eval/shapes_smoke.yaml", "--tsv", "{TSV}",
                                         "--external", "--out", "{OUT}", "--limit", "1"],
                                        ["{CUT}/model.safetensors is not a complete safetensors file"]),
}


@pytest.mark.parametrize("case", INFERENCE_CASES)
def test_inference_bad_inputs(case, generate_inputs, capsys, monkeypatch):
    from conftest import REPO
    monkeypatch.chdir(REPO)
    args, named = INFERENCE_CASES[case]
    fill = lambda text: text.format(**generate_inputs) if "{" in text and "}" in text else text
    before = _file_hashes(*(generate_inputs[k] for k in ("CKPT", "CUT", "BOMB", "IMAGE", "TSV")))
    rc = main([fill(a) for a in args])
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    assert captured.err.count("error:") == 1 and "Traceback" not in captured.err, captured.err
    for text in named:
        assert fill(text) in captured.err, (fill(text), captured.err)
    assert _file_hashes(*(generate_inputs[k] for k in ("CKPT", "CUT", "BOMB", "IMAGE", "TSV"))) == before


def test_an_unquoted_placeholder_in_a_recipe_says_quote_it_with_the_line(tmp_path, capsys):
    lines = open(SMOKE1).read().splitlines()
    number = next(i for i, line in enumerate(lines, start=1) if line.startswith("output:"))
    lines[number - 1] = "output: {checkpoints}"
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("\n".join(lines) + "\n")
    before = _file_hashes(recipe)
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert (f'output: {{checkpoints}} without quotes is a YAML mapping, not text: quote the value, e.g. '
            f'"{{checkpoints}}" ({recipe}, line {number})') in err, err
    assert "Input should be a valid string" not in err and _file_hashes(recipe) == before


def test_verify_advice_names_only_flags_verify_has(tmp_path, capsys):
    records = [{"id": f"s{i}", "image": f"gone-{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A shape."}]} for i in range(4)]
    (tmp_path / "data.json").write_text(json.dumps(records))
    before = _file_hashes(tmp_path / "data.json")
    assert main(["prepare", "verify", str(tmp_path), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert f"images missing from {tmp_path / 'images'}" in err and "--image-root" not in err, err
    with pytest.raises(SystemExit):
        main(["prepare", "verify", "--help"])
    assert "--image-root" not in capsys.readouterr().out
    assert _file_hashes(tmp_path / "data.json") == before
