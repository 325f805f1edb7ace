"""Every YAML/JSON config loads through llava.typed_config, so the same mistake reads the same everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llava.containers.host import load_needs
from llava.errors import KitError
from llava.evaluate.suite import load_suite
from llava.packaged import STAGES_DIR, SUITES_DIR
from llava.prepare.models import load_sources as load_model_pins
from llava.prepare.sources import DEFAULT_SOURCES, load_sources
from llava.profiles import load_profile
from llava.publish.results import read_results
from llava.recipe import load_recipe
from llava.train.deepspeed_profiles import load_deepspeed_config

MODEL_PINS = Path(__file__).resolve().parent.parent / "llava" / "prepare" / "model_sources.yaml"
# loader, a valid file of its kind, an unknown key one letter off a real one, the key it should suggest
TYPO_CASES = {
    "suite": (load_suite, SUITES_DIR / "shapes_smoke.yaml", "circulr", "circular"),
    "dataset sources": (load_sources, DEFAULT_SOURCES, "stagez", "stages"),
    "model pins": (load_model_pins, MODEL_PINS, "modelz", "models"),
    "speed profile": (load_profile, STAGES_DIR / "profiles" / "fast.yaml", "descriptin", "description"),
}


def _error(load, path: Path) -> list[str]:
    with pytest.raises(KitError) as err:
        load(path)
    return str(err.value).splitlines()


@pytest.mark.parametrize("case", TYPO_CASES)
def test_an_unknown_key_reads_the_same_in_every_config(tmp_path, case):
    load, valid, typo, meant = TYPO_CASES[case]
    body = yaml.safe_load(valid.read_text())
    body[typo] = body.get(meant)
    path = tmp_path / f"mine{valid.suffix}"
    path.write_text(yaml.safe_dump(body))
    assert _error(load, path) == [f"{path}: unknown key '{typo}':", f"  {typo}: unknown key; did you mean {meant}?"]


def test_the_recipe_uses_the_same_problem_lines(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((STAGES_DIR / "smoke" / "stage2.yaml").read_text() + "\noutptu: x\n")
    assert _error(load_recipe, path) == [f"{path}: invalid recipe:", "  outptu: unknown key; did you mean output?"]


def test_a_wrong_value_names_key_expectation_and_value(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"suite": "s", "dataset": "d", "backend": "builtin", "judge": "exact_matching",
                                "split": "dev", "rows": [], "n_questions": "many", "created": "now"}))
    lines = _error(read_results, path)
    assert lines[0].startswith(f"{path}: key 'n_questions': Input should be a valid integer")
    assert lines[0].endswith("(got 'many'):") and lines[1].startswith("  n_questions: Input should be")


@pytest.mark.parametrize("load", [load_suite, load_sources, load_model_pins, load_profile, load_recipe, load_needs])
def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, load):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nrows: [1, 2\n")
    with pytest.raises(KitError, match=rf"^{path}: not valid YAML \(line 3, column 1\): expected ','"):
        load(path)


@pytest.mark.parametrize("load", [read_results, load_deepspeed_config])
def test_a_json_syntax_error_names_file_line_and_column(tmp_path, load):
    path = tmp_path / "broken.json"
    path.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(KitError, match=rf"^{path}: not valid JSON \(line 2, column 7\): Expecting value"):
        load(str(path))
