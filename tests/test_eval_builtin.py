"""The built-in backend end to end on a tiny random checkpoint: prompt rendering, generation, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from llava.cli import main
from llava.errors import KitError
from llava.evaluate.builtin import CheckpointAnswerer
from llava.evaluate.mmbench_tsv import read_mmbench_tsv, write_mmbench_tsv
from llava.evaluate.prompt import build_mcq_prompt, user_turn_text
from llava.evaluate.service import run_eval, score_predictions
from llava.manifest import manifest_hash, weights_sha256, write_manifest

from test_eval_mmbench import question  # same tests folder

REPO = Path(__file__).resolve().parents[1]
SMOKE_SUITE = REPO / "eval" / "shapes_smoke.yaml"
pytestmark = pytest.mark.slow  # builds and runs a tiny model (about 25 s on 2 CPU cores)
QWEN_1_5 = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{PROMPT}"
            "<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlavaOnevision checkpoint saved the way training saves stage outputs."""
    from llava.model.build import assemble_from_parts
    from llava.model.checkpoint import save_checkpoint
    from llava.recipe import load_recipe
    from llava.synthetic.tiny_models import write_tiny_llm, write_tiny_vision
    from llava.synthetic.tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    corpus = [QWEN_1_5.replace("{PROMPT}", "Question: Which shape is shown?\nOptions:\nA. shape\nB. circle\n"
                                           "Please select the correct answer from the options above. \n")] * 4
    tokenizer = build_tiny_tokenizer(corpus, root / "tiny-qwen2")
    write_tiny_llm(root / "tiny-qwen2", tokenizer)
    write_tiny_vision(root / "tiny-siglip")
    recipe = load_recipe(REPO / "stages" / "smoke" / "stage2.yaml", overrides=[
        "init.from_checkpoint=null", f"init.llm={root / 'tiny-qwen2'}", f"init.vision_tower={root / 'tiny-siglip'}"])
    built = assemble_from_parts(recipe, root / "tiny-qwen2", root / "tiny-siglip")
    folder = save_checkpoint(built, root / "checkpoints" / "stage2")
    write_manifest(folder, "checkpoint", metrics={"train_loss": 0.0})
    return folder


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(11)
    qs = [question(i, rng, n_options=n, size=20, hint="Look at the picture." if i % 2 else None)
          for i, n in enumerate([2, 3, 2, 4])]  # 11 rows: keeps CPU generation short
    return write_mmbench_tsv(qs, tmp_path_factory.mktemp("tsv") / "shapes.tsv", circular=True)


def test_chat_template_renders_the_original_qwen_1_5_prompt(checkpoint: Path, tsv: Path) -> None:
    answerer = CheckpointAnswerer(checkpoint, max_new_tokens=4)
    row = next(r for r in read_mmbench_tsv(tsv).rows if r.hint is not None and len(r.options) == 4)
    prompt = build_mcq_prompt(row)
    assert prompt == (f"Hint: Look at the picture.\nQuestion: {row.question}\nOptions:\n"
                      + "".join(f"{k}. {v}\n" for k, v in row.options.items())
                      + "Please select the correct answer from the options above. \n")
    assert answerer.render(user_turn_text(row)) == QWEN_1_5.replace("{PROMPT}", prompt)


def test_builtin_eval_end_to_end_and_resume(checkpoint: Path, tsv: Path, tmp_path: Path) -> None:
    data = read_mmbench_tsv(tsv)
    out = tmp_path / "eval"
    first = run_eval(checkpoint, SMOKE_SUITE, backend="builtin", out_dir=out, tsv=tsv, limit=2)
    lines_1 = (out / "predictions.jsonl").read_text().splitlines()
    first_rows = [r.index for r in data.rows if r.question_index in (0, 1)]
    assert sorted(json.loads(x)["index"] for x in lines_1) == sorted(first_rows)  # every pass of 2 questions
    assert first["n_questions"] == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["extra"]["generated"], manifest["extra"]["reused"]) == (len(first_rows), 0)

    # the second run answers only the rows the first did not; the first run's lines stay as they were
    code = main(["eval", str(checkpoint), "--suite", str(SMOKE_SUITE), "--tsv", str(tsv), "--out", str(out)])
    assert code == 0
    lines_2 = (out / "predictions.jsonl").read_text().splitlines()
    assert lines_2[: len(lines_1)] == lines_1
    records = [json.loads(x) for x in lines_2]
    assert sorted(r["index"] for r in records) == sorted(r.index for r in data.rows)  # each row exactly once
    sessions = [r["session"] for r in records]
    assert len(set(sessions[: len(lines_1)])) == 1 and len(set(sessions[len(lines_1):])) == 1
    assert sessions[0] != sessions[-1]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["extra"]["generated"], manifest["extra"]["reused"]) == (len(data.rows) - len(first_rows),
                                                                           len(first_rows))
    results = json.loads((out / "results.json").read_text())
    assert results["n_questions"] == 4 and results["backend"] == "builtin"
    assert results["weights_sha256"] == weights_sha256(checkpoint)
    assert manifest["inputs"] == {"checkpoint": manifest_hash(checkpoint)}

    # a third run has nothing left to generate; re-scoring the file gives the same table
    assert run_eval(checkpoint, SMOKE_SUITE, out_dir=out, tsv=tsv)["rows"] == results["rows"]
    rescored = score_predictions(tsv, out / "predictions.jsonl", tmp_path / "rescored", suite_path=SMOKE_SUITE)
    assert rescored["rows"] == results["rows"]


def test_predictions_are_what_the_checkpoint_generates(checkpoint: Path, tsv: Path, tmp_path: Path) -> None:
    """Each stored answer equals a direct generate() on the hand-written qwen_1_5 prompt."""
    from llava.model.checkpoint import load_for_inference

    run_eval(checkpoint, SMOKE_SUITE, out_dir=tmp_path / "eval", tsv=tsv, limit=1)
    stored = {json.loads(x)["index"]: json.loads(x)["prediction"]
              for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()}
    model, processor = load_for_inference(checkpoint)
    data = read_mmbench_tsv(tsv)
    for row in (r for r in data.rows if r.question_index == 0):
        text = QWEN_1_5.replace("{PROMPT}", build_mcq_prompt(row))
        inputs = processor(images=data.image(row), text=text, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
        expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        assert stored[row.index] == expected


def test_checkpoint_without_manifest_is_refused(checkpoint: Path, tsv: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "foreign"
    shutil.copytree(checkpoint, copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(KitError, match="has no manifest.json"):
        run_eval(copy, SMOKE_SUITE, out_dir=tmp_path / "eval", tsv=tsv, limit=1)
    assert run_eval(copy, SMOKE_SUITE, out_dir=tmp_path / "eval", tsv=tsv, limit=1, external=True)["n_questions"] == 1


def test_sampling_checkpoint_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    """VLMEvalKit's HF class would sample with such a config: scores would not be reproducible."""
    import shutil

    copy = tmp_path / "sampling"
    shutil.copytree(checkpoint, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**config, "do_sample": True, "temperature": 0.7}))
    with pytest.raises(KitError, match="do_sample=true"):
        CheckpointAnswerer(copy, max_new_tokens=4)
