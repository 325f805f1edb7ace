"""`llava-kit reproduce`: a tiny smoke run published to the loopback Hub, reproduced in a fresh LLAVA_KIT_HOME.

The record is read from the loopback Hub through huggingface_hub; the tiny world is rebuilt from its
recorded seed (the world's "prepare"). On one CPU box with the same packages the kit's training is
deterministic, so the verdict must be "reproduced" with every logged loss equal bit for bit. Two negative
controls: the world generator changed upstream (one caption), and one recipe value edited in the published
record; each report must name where the runs part.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fake_hub import FakeHub

pytestmark = pytest.mark.slow  # about 50 s of CPU: a tiny smoke run, its publish and three reproductions

REPO_ID = "acme/tiny-smoke"
TOKEN = "hf_reproduceTestToken0123456789abcdefgh"
STAGES = ("stage1", "stage1_5", "stage2")
CHANGED_SAMPLE = "stage1-00003"


def _tiny_smoke(out: Path) -> dict:
    from llava.pipeline import run_smoke
    from llava.synthetic.world import WorldSize

    # the shipped tiny instruct LLM (shuffled options): it answers in words, which publish's
    # load-and-generate check requires; 6 questions in 4 rotated passes are 24 answers
    size = WorldSize(stage1=40, stage1_5=16, stage2=32, test_questions=6, shuffle_options=True, stage1_5_drills=8)
    return run_smoke(out, world_size=size, overrides=("training.logging_steps=1",))


def _fresh_home(patch: pytest.MonkeyPatch, home: Path) -> None:
    for name in ("LLAVA_KIT_MODELS", "LLAVA_KIT_DATASETS", "LLAVA_KIT_CHECKPOINTS", "LLAVA_KIT_RUNS",
                 "LLAVA_KIT_IMAGE_DIGEST"):
        patch.delenv(name, raising=False)
    patch.setenv("LLAVA_KIT_HOME", str(home))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from huggingface_hub import constants

    from llava.pipeline import smoke_layout
    from llava.publish.service import PublishRequest, publish

    root = tmp_path_factory.mktemp("reproduce")
    smoke = root / "smoke"
    report = _tiny_smoke(smoke)
    with FakeHub(root / "hub", token=TOKEN) as hub, pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)  # as fake_hub.allow_loopback, for the module
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the loopback Hub speaks plain HTTP/LFS only
        patch.setenv("HF_TOKEN", TOKEN)
        _fresh_home(patch, smoke)
        publish(PublishRequest(checkpoint=smoke / "checkpoints" / "stage2", repo_id=REPO_ID,
                               eval_results=smoke / "eval" / "results.json", endpoint=hub.url), smoke_layout(smoke))
        yield {"hub": hub, "root": root, "smoke": smoke, "report": report, "patch": patch}


def _reproduce(published, name: str, **options) -> tuple[dict, Path]:
    from llava.pipeline import run_reproduce

    home = published["root"] / f"home-{name}"
    _fresh_home(published["patch"], home)
    report = run_reproduce(REPO_ID, endpoint=published["hub"].url, say=lambda line: None, **options)
    return report, home / "runs" / "reproduce" / REPO_ID.replace("/", "--")


@pytest.fixture(scope="module")
def reproduced(published):
    return _reproduce(published, "fresh")


def _history(folder: Path) -> list:
    return json.loads((folder / "manifest.json").read_text())["extra"]["loss_history"]


def test_reproduction_from_the_hub_is_bit_identical(published, reproduced):
    report, out = reproduced
    assert report["verdict"] == "reproduced", report["reasons"]
    assert report["environment"]["exact"] is True
    for stage in STAGES:
        mine, theirs = _history(out / "checkpoints" / stage), _history(published["smoke"] / "checkpoints" / stage)
        assert len(mine) >= 2 and mine == theirs, stage  # every per-step loss, bit for bit
    assert [row["delta"] for row in report["eval"]["rows"]] == [0.0] * len(report["eval"]["rows"])
    assert report["eval"]["answers_same"] == report["eval"]["answers_total"] == 24  # every raw answer too
    ours = json.loads((out / "eval" / "results.json").read_text())["rows"]
    theirs = json.loads((published["smoke"] / "eval" / "results.json").read_text())["rows"]
    assert [(r["name"], r["value"]) for r in ours] == [(r["name"], r["value"]) for r in theirs]
    # the world was rebuilt in the fresh home's reproduction folder, not copied from the publisher's
    assert (out / "world" / "datasets" / "stage1" / "data.json").read_bytes() == \
        (published["smoke"] / "datasets" / "stage1" / "data.json").read_bytes()
    assert all(check["matches"] for check in report["data"])


def test_report_markdown_and_chart(reproduced):
    from PIL import Image

    report, out = reproduced
    text = (out / "report.md").read_text()
    assert text.startswith("# Reproduction: reproduced") and "**Verdict: reproduced.**" in text
    assert f"{REPO_ID} at commit" in text and "bit for bit" in text
    for stage in STAGES:
        assert f"| {stage} | " in text and "| none |" in text
    assert "| Overall | " in text and "+0.00" in text and "Answers identical to the published ones: 24 of 24." in text
    with Image.open(out / "loss.png") as chart:
        colours = {colour for _, colour in chart.convert("RGB").getcolors(1 << 20)}
        assert chart.size[0] > 3 * chart.size[1]  # one panel per stage, side by side
    assert (0x1f, 0x77, 0xb4) in colours and (0xff, 0x7f, 0x0e) in colours  # reproduced and published curves


def test_rerun_reuses_what_is_prepared_and_trained(published, reproduced):
    _, out = reproduced
    before = {stage: (out / "checkpoints" / stage / "model.safetensors").stat().st_mtime_ns for stage in STAGES}
    report, again = _reproduce(published, "fresh")
    assert again == out and report["verdict"] == "reproduced"
    assert {stage: (out / "checkpoints" / stage / "model.safetensors").stat().st_mtime_ns for stage in STAGES} == before


def test_changed_upstream_data_names_the_dataset_and_sample(published, monkeypatch):
    """The world generator (this world's upstream) now writes another caption for one sample."""
    import llava.synthetic.world as world

    original = world.caption_record

    def changed(sample_id, image, scene):
        record = original(sample_id, image, scene)
        if sample_id == CHANGED_SAMPLE:
            record["conversations"][-1]["value"] += " It is small."
        return record

    monkeypatch.setattr(world, "caption_record", changed)
    report, out = _reproduce(published, "data", stages=["stage1"])
    assert report["verdict"] == "not reproduced"
    [check] = [c for c in report["data"] if c["stage"] == "stage1"]
    assert check["matches"] is False and check["first_sample"] == CHANGED_SAMPLE
    text = (out / "report.md").read_text()
    assert ("stage1 data differs from the record: shapes world, seed 0: {datasets}/stage1/data.json, "
            f"first differing sample `{CHANGED_SAMPLE}`") in text


def test_changed_recipe_in_the_record_names_the_key_and_first_step(published):
    hub = published["hub"]
    repo = hub.repo(REPO_ID)
    body = json.loads(repo.commits[repo.refs["main"]].files["llava_kit_run.json"])
    stage1 = body["stages"][0]
    stage1["recipe"]["training"]["learning_rate"] = 0.02
    repo.commit({"llava_kit_run.json": json.dumps(body).encode()}, "edit the record", replace=False)
    report, out = _reproduce(published, "recipe", stages=["stage1"])
    assert report["verdict"] == "not reproduced"
    [loss] = report["losses"]
    published_history = _history(published["smoke"] / "checkpoints" / "stage1")
    reproduced_history = _history(out / "checkpoints" / "stage1")
    first = next(step for (step, a), (_, b) in zip(published_history, reproduced_history) if a != b)
    # step 1's loss comes before any update and the warmup's first update has lr 0: the lr shows from step 3
    assert loss["first_step"] == first == 3
    text = (out / "report.md").read_text()
    assert "stage1 recipe in the record differs from the one its training recorded: `training.learning_rate` " \
           "(trained 0.001, record 0.02)" in text
    assert "stage1 loss parts at step 3" in text
    trained = yaml.safe_load((out / "recipes" / "stage1.yaml").read_text())
    assert trained["training"]["learning_rate"] == 0.02


def test_tiny_smoke_card_says_what_it_is(published):
    from huggingface_hub import ModelCard

    repo = published["hub"].repo(REPO_ID)
    files = repo.commits[repo.history[1]].files
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model is None and card.data.to_dict().get("base_model_relation") is None
    assert card.text.lstrip().startswith("# tiny-smoke\n\nA tiny test model built by llava-kit on its synthetic "
                                         "shapes world (world seed 0)")
    assert "tiny-qwen2 (shipped tiny instruct stand-in (synthetic/instruct_llm.py))" in card.text
    assert "not trained from any Hub model" in card.text
    for claim in ("Qwen2.5-0.5B", "SigLIP", "siglip-so400m", "re-runs the recipe", "llavanext-scaled"):
        assert claim not in card.text, claim
    assert f"llava-kit reproduce {REPO_ID}" in card.text
    record = json.loads(files["llava_kit_run.json"])
    assert record["what"]["kind"] == "tiny-world" and record["what"]["base_models"] == []
    assert record["seeds"] == {"stage1": 0, "stage1_5": 0, "stage2": 0, "world": 0}


def test_seed_reproduction_without_gpus_says_what_it_would_run(tmp_path, monkeypatch):
    """The seed's numbers as the record: on a CPU box the command prints its plan and trains nothing."""
    import subprocess
    import sys

    monkeypatch.setenv("LLAVA_KIT_HOME", str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "llava.cli", "reproduce", "seed", "--out", str(tmp_path / "seed")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "devices: recorded 4 x cuda, here CPU only" in out and "not running" in out
    assert "llava-kit prepare data --stage 1.5 --revision main  # subset of 30000 drawn with seed 0" in out
    assert (f"LLAVA_KIT_CHECKPOINTS={tmp_path / 'seed' / 'checkpoints'} LLAVA_KIT_RUNS={tmp_path / 'seed' / 'runs'} "
            f"llava-kit train {tmp_path / 'seed' / 'recipes' / 'stage2.yaml'} --nproc 4") in out
    assert "published final loss 0.7040835454853266" in out and "compare with 27 published rows" in out
    assert not (tmp_path / "seed" / "checkpoints").exists()
    recipe = yaml.safe_load((tmp_path / "seed" / "recipes" / "stage1.yaml").read_text())
    assert recipe["training"]["learning_rate"] == 1e-3 and recipe["deepspeed"] == "seed"


def test_a_source_that_is_no_record_is_one_error_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    for source, expected in ((str(tmp_path / "empty"), "holds no llava_kit_run.json"),
                             ("not a repo", "is neither a folder nor a Hub repo id")):
        done = subprocess.run([sys.executable, "-m", "llava.cli", "reproduce", source, "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_folder_holding_the_repo_reproduces_part_of_the_run(published):
    """The repository as a folder (here the loopback Hub's copy of what it received); stage 1 only."""
    from llava.pipeline import run_reproduce

    folder = published["root"] / "hub" / "received" / "models" / REPO_ID
    _fresh_home(published["patch"], published["root"] / "home-folder")
    report = run_reproduce(str(folder), stages=["stage1"], out=published["root"] / "folder-out", say=lambda line: None)
    assert report["verdict"] == "incomplete" and report["origin"] == f"folder {folder}"
    assert [loss["first_step"] for loss in report["losses"]] == [None] and report["eval"]["within"] is None
    assert _history(published["root"] / "folder-out" / "checkpoints" / "stage1") == \
        _history(published["smoke"] / "checkpoints" / "stage1")
