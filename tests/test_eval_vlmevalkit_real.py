"""VLMEvalKit's real code on the smoke checkpoint, row by row against the kit's builtin backend.

The pinned artifact (docker/vlmevalkit.txt, the eval image's) is installed in its own venv
(tests/vlmevalkit_env.py); its `run.py` runs with `--judge exact_matching` on the smoke world's
MMBench-format TSV through `LLaVA_OneVision_HF`, started by the kit's launcher, under a harness that
only redirects the class's CUDA/float16 moves to CPU/float32 (tests/vlmevalkit_cpu_run.py).
For every row: the prompt string, input_ids, pixel_values (also against the training processor),
and the answer equal the builtin backend's; acc.csv is byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llava.errors import KitError
from llava.evaluate.builtin import CheckpointAnswerer
from llava.evaluate.mmbench_tsv import read_mmbench_tsv
from llava.evaluate.predictions import read_predictions
from llava.evaluate.prompt import user_turn_text
from llava.evaluate.suite import load_suite
from llava.evaluate.vlmevalkit import (check_runtime, command_line, config_document, environment, find_output,
                                       probe_runtime, run_subprocess, stage_lmudata)
from llava.pipeline import SMOKE_SUITE, run_smoke
from llava.synthetic.world import WorldSize, held_out_tsv

from vlmevalkit_env import vlmevalkit_python  # same tests folder

pytestmark = pytest.mark.slow
HARNESS = Path(__file__).resolve().parent / "vlmevalkit_cpu_run.py"
QUESTIONS = 12  # the smoke TSV holds one row per question


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """`llava-kit smoke` on a smaller test set: three trained stages and the builtin eval of stage 2."""
    out = tmp_path_factory.mktemp("smoke")
    run_smoke(out, world_size=WorldSize(test_questions=QUESTIONS))
    return out


@pytest.fixture(scope="module")
def vlmevalkit_run(smoke: Path, tmp_path_factory) -> dict:
    suite = load_suite(SMOKE_SUITE)
    python = str(vlmevalkit_python())
    scratch = tmp_path_factory.mktemp("vlmevalkit")
    config = scratch / "config.json"
    config.write_text(json.dumps(config_document(suite, smoke / "checkpoints" / "stage2")))
    work = scratch / "work"
    record = scratch / "record.pt"
    command = command_line(config, work, suite.judge, python)
    assert command[1:3] == ["-m", "llava.evaluate.vlmevalkit_main"]
    lmudata = stage_lmudata(held_out_tsv(smoke), suite.dataset, scratch / "LMUData")
    run_subprocess([python, str(HARNESS), str(record), *command[3:]], environment(lmudata), scratch / "run.log")
    acc = find_output(work, suite, ("_acc.csv", "_exact_matching_acc.csv"))
    sheet = find_output(work, suite, (".xlsx", ".tsv"))
    assert acc is not None and sheet is not None, (scratch / "run.log").read_text()[-3000:]
    return {"acc": acc, "sheet": sheet, "record": torch.load(record), "suite": suite}


@pytest.mark.extended
@pytest.mark.timeout(3600)
def test_vlmevalkit_run_py_equals_the_builtin_backend_row_by_row(smoke: Path, vlmevalkit_run: dict) -> None:
    suite = vlmevalkit_run["suite"]
    data = read_mmbench_tsv(held_out_tsv(smoke), split_default=suite.split)
    answerer = CheckpointAnswerer(smoke / "checkpoints" / "stage2", suite.prompt.max_new_tokens)
    record = vlmevalkit_run["record"]
    assert len(record) == len(data.rows) == QUESTIONS
    assert {r["device"] for r in record} == {"cpu"} and {r["dtype"] for r in record} == {"torch.float32"}
    builtin_answers = {json.loads(line)["index"]: json.loads(line)["prediction"]
                       for line in (smoke / "eval" / "predictions.jsonl").read_text().splitlines()}
    theirs = read_predictions(vlmevalkit_run["sheet"])
    from llava.data.processor import load_processor
    training = load_processor(smoke / "checkpoints" / "stage2")
    for call, row in zip(record, data.rows):  # run.py answers the TSV's rows in file order
        assert call["prompt"] == answerer.render(user_turn_text(row, suite.prompt.image_prefix)), row.index
        image = data.image(row)
        ours = answerer.processor(images=image, text=call["prompt"], return_tensors="pt")
        assert torch.equal(call["input_ids"], ours["input_ids"]), row.index
        assert torch.equal(call["pixel_values"], ours["pixel_values"]), row.index
        assert torch.equal(call["pixel_values"], training.image_processor(image, return_tensors="pt")["pixel_values"])
        # VLMEvalKit always allows 2048 new tokens, the smoke suite 16: answers compare only if the model stops
        new_tokens = call["output_ids"].shape[1] - call["input_ids"].shape[1]
        assert new_tokens < suite.prompt.max_new_tokens, f"row {row.index}: no end token in {new_tokens} tokens"
        assert theirs[row.index] == builtin_answers[row.index], row.index
    assert vlmevalkit_run["acc"].read_bytes() == (smoke / "eval" / "acc.csv").read_bytes()


def test_kit_refuses_vlmevalkit_backend_without_cuda() -> None:
    """`llava-kit eval --backend vlmevalkit` on this CPU box: the real runtime, a clear refusal."""
    python = str(vlmevalkit_python())
    spec = load_suite(SMOKE_SUITE).vlmevalkit
    runtime = probe_runtime(python, "ms-vlmeval")
    assert runtime.package == "0.0.20" and runtime.torchvision and not runtime.cuda
    with pytest.raises(KitError, match=r"no CUDA device .*float16.*--backend builtin"):
        check_runtime(runtime, spec, python)


def test_kit_says_what_to_install_without_vlmevalkit() -> None:
    import sys
    spec = load_suite(SMOKE_SUITE).vlmevalkit
    runtime = probe_runtime(sys.executable, "ms-vlmeval")  # the kit's own venv: no VLMEvalKit, no torchvision
    with pytest.raises(KitError, match=r"ms-vlmeval==0.0.20\) is not installed.*--require-hashes -r docker/vlmevalkit.txt"):
        check_runtime(runtime, spec, sys.executable)
    runtime = type(runtime)(package="0.0.20", torchvision=False, torch="2.13.0", cuda=True)
    with pytest.raises(KitError, match=r"no torchvision.*pip install torchvision==0.28.0"):
        check_runtime(runtime, spec, sys.executable)


def test_pin_is_one_artifact_everywhere() -> None:
    """The suites, the eval image and the CPU test name the same artifact; pip checks its sha256."""
    repo = Path(__file__).resolve().parents[1]
    pin_lines = [line for line in (repo / "docker" / "vlmevalkit.txt").read_text().splitlines()
                 if line and not line.startswith("#")]
    assert pin_lines == ["ms-vlmeval==0.0.20 --hash=sha256:"
                         "0f7bef18e9c1918c8619ba6e5ff0638cf9148e53c00bd32dfbb9dfbd34cda261"]
    for suite_file in sorted((repo / "eval").glob("*.yaml")):
        spec = load_suite(suite_file).vlmevalkit
        assert spec is not None and spec.package == pin_lines[0].split()[0], suite_file
        assert spec.commit == "354a485c5a9e4a69a96cdf9d8dd8457e4f765116", suite_file
    dockerfile = (repo / "docker" / "eval.Dockerfile").read_text()
    assert "--require-hashes -r /tmp/vlmevalkit.txt" in dockerfile and "docker/vlmevalkit.txt /tmp/" in dockerfile
    assert "git fetch" not in dockerfile and "VLMEvalKit.git" not in dockerfile
