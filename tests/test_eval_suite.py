"""Suites are data: eval/*.yaml validated strictly, references consistent with MMBench's sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llava.errors import KitError
from llava.evaluate.suite import load_suite
from llava.evaluate.table import L2_ABBREVIATIONS

REPO = Path(__file__).resolve().parents[1]
from test_eval_mmbench import MMBENCH_SIZES, SEED_ORDER  # noqa: E402  (same tests folder)


def test_mmbench_suite_pins_vlmevalkit_facts() -> None:
    suite = load_suite(REPO / "eval" / "mmbench_dev_en.yaml")
    assert (suite.dataset, suite.split, suite.circular, suite.judge) == ("MMBench_DEV_EN", "dev", True, "exact_matching")
    assert (suite.tsv.file, suite.tsv.md5) == ("MMBench_DEV_EN.tsv", "b6caf1133a01c6bb705cf753bb527ed8")
    assert suite.vlmevalkit.package == "ms-vlmeval==0.0.20"
    assert suite.vlmevalkit.commit == "354a485c5a9e4a69a96cdf9d8dd8457e4f765116"
    assert suite.vlmevalkit.model_class == "LLaVA_OneVision_HF"
    assert (suite.prompt.template, suite.prompt.image_prefix, suite.prompt.max_new_tokens) == ("image_mcq", "<image>\n", 2048)
    for key in ("seed", "official"):
        assert list(suite.references[key].rows) == SEED_ORDER  # every row, in VLMEvalKit's order
    assert suite.references["seed"].rows["Overall"] == 0.5420962199312714
    assert suite.references["official"].rows["Overall"] == 0.5506872852233677


@pytest.mark.parametrize("key", ["seed", "official"])
def test_reference_tables_are_consistent_with_mmbench_sizes(key: str) -> None:
    """Each leaf is k/n of its question count; l2 rows and Overall are the pooled fractions (§3.6)."""
    rows = load_suite(REPO / "eval" / "mmbench_dev_en.yaml").references[key].rows
    hits = {}
    for _, leaf, n in MMBENCH_SIZES:
        hits[leaf] = round(rows[leaf] * n)
        assert rows[leaf] == hits[leaf] / n, leaf
    for l2, abbreviation in L2_ABBREVIATIONS.items():
        members = [(leaf, n) for group, leaf, n in MMBENCH_SIZES if group == l2]
        assert rows[abbreviation] == sum(hits[leaf] for leaf, _ in members) / sum(n for _, n in members)
    assert rows["Overall"] == sum(hits.values()) / 1164
    assert sum(hits.values()) == {"seed": 631, "official": 641}[key]


def test_smoke_suite_needs_a_tsv_per_run() -> None:
    suite = load_suite(REPO / "eval" / "shapes_smoke.yaml")
    assert suite.tsv.file is None and suite.references == {} and suite.circular


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((REPO / "eval" / "shapes_smoke.yaml").read_text())
    edit(raw)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(judge_model="gpt"), r"suite.yaml: unknown key 'judge_model'"),
    (lambda r: r["prompt"].update(max_new_token=5), r"suite.yaml: unknown key 'prompt.max_new_token'"),
    (lambda r: r.pop("circular"), r"suite.yaml: missing key 'circular'"),
    (lambda r: r.update(judge="gpt-4o-mini"), r"suite.yaml: key 'judge'"),
    (lambda r: r.update(circular=False), r"circular: False disagrees with VLMEvalKit"),
    (lambda r: r.update(references={"seed": {"label": "x", "source": "y", "rows": {"Overall": 54.2}}}),
     r"key 'references.seed.rows': .*\[0, 1\]"),
])
def test_bad_suites_name_file_and_key(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(KitError, match=message):
        load_suite(_write(tmp_path, edit))
