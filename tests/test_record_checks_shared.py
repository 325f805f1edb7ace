"""One set of record checks: verify, render and training agree on what is too long and on ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.cli import main
from llava.data.record_checks import id_faults, length_fault
from llava.prepare.stats import text_lengths
from llava.recipe import STAGES_DIR, load_recipe
from llava.synthetic.tokenizer import build_tiny_tokenizer

SMOKE1 = str(STAGES_DIR / "smoke" / "stage1.yaml")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer(["What is shown? Describe the image in detail. Seven."] * 20, out, vocab_size=300)
    return out


def _text_record(sample_id: str, words: int) -> dict:
    return {"id": sample_id, "conversations": [{"from": "human", "value": "Describe the image in detail."},
                                               {"from": "gpt", "value": "Seven " * words}]}


def _dataset(folder: Path, records: list[dict]) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "data.json").write_text(json.dumps(records))
    return folder


def _quarantine(folder: Path) -> dict[str, str]:
    return {row["id"]: row["reason"] for row in map(json.loads, (folder / "quarantine.jsonl").read_text().splitlines())}


def test_verify_quarantines_what_exceeds_max_length_with_the_count(tmp_path, tokenizer_dir, capsys):
    from transformers import AutoTokenizer

    records = [_text_record("short", 3), _text_record("long", 200), _text_record("also-short", 10)]
    folder = _dataset(tmp_path, records)
    tokens = text_lengths(records, AutoTokenizer.from_pretrained(tokenizer_dir))
    assert tokens[1] > 60 > max(tokens[0], tokens[2])
    code = main(["prepare", "verify", str(folder), "--stage", "2", "--tokenizer", str(tokenizer_dir), "--workers", "1",
                 "--max-length", "60", "--max-bad-fraction", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _quarantine(folder) == {"long": f"{tokens[1]} tokens exceed model_max_length 60"}
    assert "lengths checked against model_max_length 60 (--max-length)" in out
    assert [r["id"] for r in json.loads((folder / "data.verified.json").read_text())] == ["short", "also-short"]


def test_verify_takes_the_limit_from_the_stage_recipe_and_says_so(tmp_path, tokenizer_dir, capsys):
    limit = load_recipe("stage2").training.model_max_length
    folder = _dataset(tmp_path, [_text_record("fits", 5), _text_record("too-long", limit + 10)])
    code = main(["prepare", "verify", str(folder), "--stage", "2", "--tokenizer", str(tokenizer_dir), "--workers", "1",
                 "--max-bad-fraction", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"lengths checked against model_max_length {limit} (training.model_max_length of recipe stage2)" in out
    reason = _quarantine(folder)["too-long"]
    assert reason.endswith(f"tokens exceed model_max_length {limit}") and int(reason.split()[0]) > limit


def test_verify_says_when_it_cannot_count_tokens(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLAVA_KIT_HOME", str(tmp_path))  # no models/ here: no default tokenizer
    folder = _dataset(tmp_path / "data", [_text_record("a", 5)])
    assert main(["prepare", "verify", str(folder), "--stage", "2", "--workers", "1"]) == 0
    limit = load_recipe("stage2").training.model_max_length
    assert (f"lengths not checked against model_max_length {limit} (training.model_max_length of recipe stage2): "
            "no tokenizer (pass --tokenizer)") in capsys.readouterr().out
    assert main(["prepare", "verify", str(folder), "--workers", "1", "--stage", "2", "--max-length", "9"]) == 0
    assert "lengths not checked against model_max_length 9 (--max-length): no tokenizer" in capsys.readouterr().out


def test_max_length_must_be_a_positive_number(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "verify", str(tmp_path), "--max-length", "-5"])
    assert exit_info.value.code == 2
    assert "--max-length: expected a positive whole number of tokens, got '-5'" in capsys.readouterr().err


def test_render_prints_the_count_with_the_limit(tiny_world, tmp_path, capsys):
    limit = load_recipe(SMOKE1).training.model_max_length
    record = {"id": "x", "image": "x.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red " * 2000}]}
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(record))
    args = ["render", "--recipe", SMOKE1, "--sample", str(sample), "--home", str(tiny_world), "--image-size", "64x64"]
    assert main([*args, "--json"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    count = len(rendered["input_ids"])
    assert (rendered["model_max_length"], rendered["over_max_length"]) == (limit, True) and count > limit
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{count} of model_max_length {limit} tokens" in out
    assert f"over the limit: {length_fault(count, limit)} (training.model_max_length of {SMOKE1})" in out
    record["conversations"][1]["value"] = "red"
    sample.write_text(json.dumps(record))
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["over_max_length"] is False


def test_training_skips_with_the_same_reason(tiny_world):
    """The dataset's skip reason is the shared check's, word for word."""
    from llava.data.dataset import ConversationDataset, SkippedSample
    from llava.data.images import image_pipeline
    from llava.data.processor import recipe_processor
    from llava.pipeline import smoke_layout

    recipe = load_recipe(SMOKE1)
    layout = smoke_layout(tiny_world)
    processor = recipe_processor(recipe, layout)
    image = json.loads(layout.resolve(recipe.data.path).read_text())[0]["image"]
    record = {"id": "long", "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat colour?"},
                                                              {"from": "gpt", "value": "red " * 2000}]}
    dataset = ConversationDataset([record], layout.resolve(recipe.data.image_folder), processor.tokenizer,
                                  image_pipeline(recipe.model.image_mode, processor), template=recipe.data.template,
                                  system_prompt=recipe.data.system_prompt, label_mode=recipe.data.label_mode,
                                  max_length=recipe.training.model_max_length)
    skipped = dataset[0]
    assert isinstance(skipped, SkippedSample)
    count = int(skipped.reason.split()[0])
    assert skipped.reason == length_fault(count, recipe.training.model_max_length) and count > 1024


def test_id_checks_are_shared():
    records = [{"id": "a"}, {"id": "b"}, {"id": "a"}, {}, {"id": ""}]
    assert id_faults(records) == {2: "duplicate id", 3: "missing id", 4: "missing id"}
