"""The VLMEvalKit bridge: --config JSON, command line, acc.csv layout, and a real subprocess run.

Fast tests with a stand-in: a `vlmeval` package whose run.py answers from the TSV, installed as the
pinned distribution (a dist-info on PYTHONPATH), run as a real subprocess through the kit's launcher and
writing files in VLMEvalKit's layout. The machine facts VLMEvalKit needs (torchvision, a CUDA device)
are reported present. VLMEvalKit's real code runs in tests/test_eval_vlmevalkit_real.py.
"""

from __future__ import annotations

import json
import random
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from llava.errors import KitError
from llava.evaluate.mmbench_tsv import write_mmbench_tsv
from llava.evaluate.service import run_eval
from llava.evaluate.suite import load_suite
from llava.evaluate.table import read_acc_csv
from llava.evaluate import vlmevalkit
from llava.evaluate.vlmevalkit import command_line, config_document, environment
from llava.manifest import write_manifest

from test_eval_mmbench import SEED_ORDER, question  # same tests folder

REPO = Path(__file__).resolve().parents[1]
SMOKE_SUITE = REPO / "eval" / "shapes_smoke.yaml"
MMBENCH_SUITE = REPO / "eval" / "mmbench_dev_en.yaml"
PIN = "354a485c5a9e4a69a96cdf9d8dd8457e4f765116"  # the commit ms-vlmeval 0.0.20 packages
# The seed's table exactly as VLMEvalKit writes `*_acc.csv`: all cells quoted, one row per split.
SEED_ACC_CSV = (
    '"split","Overall","AR","CP","FP-C","FP-S","LR","RR","action_recognition","attribute_comparison",'
    '"attribute_recognition","celebrity_recognition","function_reasoning","future_prediction",'
    '"identity_reasoning","image_emotion","image_quality","image_scene","image_style","image_topic",'
    '"nature_relation","object_localization","ocr","physical_property_reasoning","physical_relation",'
    '"social_relation","spatial_relationship","structuralized_imagetext_understanding"\n'
    '"dev","0.5420962199312714","0.6331658291457286","0.6554054054054054","0.44755244755244755",'
    '"0.5426621160409556","0.2966101694915254","0.4608695652173913","0.8703703703703703",'
    '"0.22727272727272727","0.6486486486486487","0.6767676767676768","0.7088607594936709","0.4",'
    '"0.8888888888888888","0.72","0.018867924528301886","0.9326923076923077","0.6226415094339622","0.75",'
    '"0.3958333333333333","0.2222222222222222","0.6666666666666666","0.4","0.20833333333333334",'
    '"0.6744186046511628","0.15555555555555556","0.24358974358974358"\n'
)

# A stand-in for VLMEvalKit's run.py: records how it was called, answers every row of
# $LMUData/<dataset>.tsv with its right letter except question 1 (wrong letter), and writes the
# prediction sheet and the acc.csv given in FAKE_ACC_CSV where VLMEvalKit would, with the symlinks.
FAKE_RUN_PY = textwrap.dedent('''
    import argparse, csv, json, os, sys
    from pathlib import Path
    import openpyxl
    p = argparse.ArgumentParser()
    for flag in ("--config", "--judge", "--work-dir", "--mode"):
        p.add_argument(flag)
    a = p.parse_args()
    config = json.load(open(a.config))
    (model, spec), = config["model"].items()
    (dataset, _), = config["data"].items()
    work = Path(a.work_dir)
    run_dir = work / model / "T20261124-101500"
    run_dir.mkdir(parents=True)
    env = {k: os.environ.get(k) for k in ("LMUData", "LITELLM_LOCAL_MODEL_COST_MAP")}
    json.dump({"argv": sys.argv, "env": env, "config": config}, open(work / "invocation.json", "w"))
    book = openpyxl.Workbook()
    book.active.append(["index", "question", "answer", "prediction"])
    with open(Path(env["LMUData"]) / f"{dataset}.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\\t"):
            index = int(row["index"])
            wrong = next(x for x in "ABCD" if x != row["answer"])
            book.active.append([index, row["question"], row["answer"], wrong if index % 1000000 == 1 else row["answer"]])
    stem = f"{model}_{dataset}"
    book.save(run_dir / f"{stem}.xlsx")
    (run_dir / f"{stem}_acc.csv").write_text(open(os.environ["FAKE_ACC_CSV"]).read())
    for name in (f"{stem}.xlsx", f"{stem}_acc.csv"):
        (work / model / name).symlink_to(run_dir / name)
    print("fake VLMEvalKit done")
''')


def test_config_json_and_command_line(tmp_path: Path) -> None:
    suite = load_suite(MMBENCH_SUITE)
    config = config_document(suite, tmp_path / "ck")
    assert config == {
        "model": {"llava_kit": {"class": "LLaVA_OneVision_HF", "model_path": str((tmp_path / "ck").resolve())}},
        "data": {"MMBench_DEV_EN": {"class": "ImageMCQDataset", "dataset": "MMBench_DEV_EN"}},
    }
    assert command_line(Path("/o/config.json"), Path("/o/work"), suite.judge, "python") == [
        "python", "-m", "llava.evaluate.vlmevalkit_main", "--config", "/o/config.json", "--judge", "exact_matching",
        "--work-dir", "/o/work", "--mode", "all"]
    env = environment(tmp_path / "lmu", base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "LMUData": str(tmp_path / "lmu"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def test_reads_vlmevalkit_acc_csv_layout(tmp_path: Path) -> None:
    path = tmp_path / "llava_kit_MMBench_DEV_EN_acc.csv"
    path.write_text(SEED_ACC_CSV)
    table = read_acc_csv(path)
    assert len(table) == 1 and table[0].split == "dev"
    assert list(table[0].values) == SEED_ORDER
    assert table[0].values == load_suite(MMBENCH_SUITE).references["seed"].rows


def test_rejects_a_table_in_another_layout(tmp_path: Path) -> None:
    path = tmp_path / "acc.csv"
    path.write_text('"Overall","0.5"\n')
    with pytest.raises(KitError, match="expected VLMEvalKit's acc.csv layout"):
        read_acc_csv(path)


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in installed as ms-vlmeval 0.0.20 on PYTHONPATH, on a machine said to have CUDA."""
    site = tmp_path / "site"
    (site / "vlmeval").mkdir(parents=True)
    (site / "vlmeval" / "__init__.py").write_text("")
    (site / "vlmeval" / "run.py").write_text(FAKE_RUN_PY)
    (site / "ms_vlmeval-0.0.20.dist-info").mkdir()
    (site / "ms_vlmeval-0.0.20.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ms-vlmeval\n"
                                                                  "Version: 0.0.20\n")
    acc = tmp_path / "fake_acc.csv"
    acc.write_text(SEED_ACC_CSV)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("FAKE_ACC_CSV", str(acc))
    real_probe = vlmevalkit.probe_runtime

    def probe_on_a_gpu_box(python: str, distribution: str) -> vlmevalkit.Runtime:
        found = real_probe(python, distribution)  # the installed version is really looked up
        return vlmevalkit.Runtime(package=found.package, torchvision=True, torch=found.torch, cuda=True)

    monkeypatch.setattr(vlmevalkit, "probe_runtime", probe_on_a_gpu_box)
    return site / "vlmeval"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "checkpoints" / "stage2"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    write_manifest(folder, "checkpoint", metrics={"train_loss": 1.0})
    return folder


def test_vlmevalkit_backend_runs_run_py_and_reports(tmp_path: Path, kit: Path, checkpoint: Path,
                                                    capfd: pytest.CaptureFixture) -> None:
    rng = random.Random(0)
    tsv = write_mmbench_tsv([question(i, rng) for i in range(3)], tmp_path / "shapes_test.tsv", circular=True)
    out = tmp_path / "eval"
    results = run_eval(checkpoint, SMOKE_SUITE, backend="vlmevalkit", out_dir=out, tsv=tsv)
    invocation = json.loads((out / "vlmevalkit" / "work" / "invocation.json").read_text())
    assert invocation["argv"][0] == str(kit / "run.py")  # VLMEvalKit's run.py ran as __main__
    assert invocation["argv"][1:] == command_line(out / "vlmevalkit" / "config.json", out / "vlmevalkit" / "work",
                                                  "exact_matching", sys.executable)[3:]
    assert invocation["env"]["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    staged = Path(invocation["env"]["LMUData"]) / "Shapes_MMBench_Smoke.tsv"
    assert staged.resolve() == tsv.resolve()  # the TSV is offered under the suite's dataset name
    assert invocation["config"]["model"]["llava_kit"] == {"class": "LLaVA_OneVision_HF",
                                                          "model_path": str(checkpoint.resolve())}
    # the table is VLMEvalKit's own acc.csv, copied byte for byte and compared against nothing (no refs)
    assert (out / "acc.csv").read_text() == SEED_ACC_CSV
    assert results["backend"] == "vlmevalkit" and results["vlmevalkit_commit"] == PIN
    assert [r["name"] for r in results["rows"]] == SEED_ORDER and results["rows"][0]["value"] == 0.5420962199312714
    # its prediction sheet became predictions.jsonl and was re-scored: question 1 wrong, 0 and 2 right
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and results["n_questions"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["builtin_rescore_overall"] == 2 / 3
    assert "differs from the built-in re-score 0.6666666666666666" in capfd.readouterr().err


def test_md5_mismatch_stops_before_vlmevalkit_runs(tmp_path: Path, kit: Path, checkpoint: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lmudata = tmp_path / "LMUData"
    lmudata.mkdir()
    write_mmbench_tsv([question(0, random.Random(1))], lmudata / "MMBench_DEV_EN.tsv", circular=True)
    monkeypatch.setenv("LMUData", str(lmudata))
    with pytest.raises(KitError, match=r"MMBench_DEV_EN.tsv: md5 [0-9a-f]{32} does not match "
                                       r"b6caf1133a01c6bb705cf753bb527ed8 \(.*mmbench_dev_en.yaml key tsv.md5\)"):
        run_eval(checkpoint, MMBENCH_SUITE, backend="vlmevalkit", out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval" / "vlmevalkit").exists()


def test_other_vlmevalkit_version_is_refused(tmp_path: Path, kit: Path, checkpoint: Path) -> None:
    dist = kit.parent / "ms_vlmeval-0.0.20.dist-info"
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ms-vlmeval\nVersion: 0.0.19\n")
    dist.rename(kit.parent / "ms_vlmeval-0.0.19.dist-info")
    tsv = write_mmbench_tsv([question(0, random.Random(2))], tmp_path / "t.tsv", circular=True)
    with pytest.raises(KitError, match=r"has ms-vlmeval 0.0.19, the suite pins ms-vlmeval==0.0.20"):
        run_eval(checkpoint, SMOKE_SUITE, backend="vlmevalkit", out_dir=tmp_path / "eval", tsv=tsv)


def test_failing_run_py_reports_its_log(tmp_path: Path, kit: Path, checkpoint: Path) -> None:
    (kit / "run.py").write_text("import sys\nprint('ModuleNotFoundError: rouge_score')\nsys.exit(3)\n")
    tsv = write_mmbench_tsv([question(0, random.Random(3))], tmp_path / "t.tsv", circular=True)
    with pytest.raises(KitError, match=r"(?s)exited with 3.*run.log.*rouge_score"):
        run_eval(checkpoint, SMOKE_SUITE, backend="vlmevalkit", out_dir=tmp_path / "eval", tsv=tsv)


def test_missing_vlmevalkit_is_explained(tmp_path: Path, checkpoint: Path) -> None:
    tsv = write_mmbench_tsv([question(0, random.Random(4))], tmp_path / "t.tsv", circular=True)
    with pytest.raises(KitError, match=r"VLMEvalKit \(ms-vlmeval==0.0.20\) is not installed.*--backend builtin"):
        run_eval(checkpoint, SMOKE_SUITE, backend="vlmevalkit", out_dir=tmp_path / "eval", tsv=tsv)
