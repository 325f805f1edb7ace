"""`llava-kit prepare data` for all three stages against the loopback Hub (tests/fake_hub.py), through
the real huggingface_hub client: download, convert, subset, verify, manifest with the resolved commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_hub import FakeHub, allow_loopback
from llava.cli import main
from llava.manifest import require_manifest
from prepare_samples import image_bytes, record, recap_shard, write_image, zip_bytes
from source_pins import pinned_revision


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    allow_loopback(monkeypatch)  # the suite runs with HF_HUB_OFFLINE=1; this server is 127.0.0.1
    with FakeHub(tmp_path / "hub") as server:
        yield server


def _publish_sources(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    """The three dataset repos, tiny; returns repo id -> commit."""
    members = {f"00000/{n:09d}.jpg": image_bytes(seed=n) for n in range(5)}
    pretrain = [record(f"{n:09d}", f"00000/{n:09d}.jpg", "Describe briefly.", f"caption {n}") for n in range(5)]
    recap_rows = [(f"{n:012d}", image_bytes(size=(50, 40), seed=n), f"Detailed caption {n}.") for n in range(8)]
    recap_shard(tmp_path / "recap.parquet", recap_rows)
    mix = [record(f"{n:012d}", f"coco/train2017/{n:012d}.jpg") for n in range(6)]
    mix += [record(f"ocr-{n}", f"ocr_vqa/images/{n}.jpg") for n in range(3)] + [record("text-0", None, "Hi?", "Hello.")]
    for n in range(6):
        write_image(tmp_path / f"coco/train2017/{n:012d}.jpg", seed=n)
    return {
        "liuhaotian/LLaVA-Pretrain": hub.add_repo("liuhaotian/LLaVA-Pretrain", "dataset").commit({
            "blip_laion_cc_sbu_558k.json": json.dumps(pretrain).encode(),
            "blip_laion_cc_sbu_558k_meta.json": b"[]",
            "images.zip": zip_bytes(members),
        }, oid=pinned_revision("liuhaotian/LLaVA-Pretrain")),
        "lmms-lab/LLaVA-ReCap-118K": hub.add_repo("lmms-lab/LLaVA-ReCap-118K", "dataset").commit({
            "data/train-00000-of-00001.parquet": (tmp_path / "recap.parquet").read_bytes(),
            "README.md": b"# ReCap",
        }, oid=pinned_revision("lmms-lab/LLaVA-ReCap-118K")),
        "liuhaotian/LLaVA-Instruct-150K": hub.add_repo("liuhaotian/LLaVA-Instruct-150K", "dataset").commit({
            "llava_v1_5_mix665k.json": json.dumps(mix).encode(),
            "llava_instruct_150k.json": b"[]" * 1000,
        }, oid=pinned_revision("liuhaotian/LLaVA-Instruct-150K")),
    }


def test_prepare_data_all_stages_from_the_hub(hub, tmp_path, monkeypatch):
    commits = _publish_sources(hub, tmp_path)
    monkeypatch.setenv("LLAVA_KIT_DATASETS", str(tmp_path / "datasets"))  # the default --out and downloads
    common = ["--endpoint", hub.url, "--workers", "1"]

    assert main(["prepare", "data", "--stage", "1", *common]) == 0
    assert main(["prepare", "data", "--stage", "1.5", "--size", "3", *common]) == 0
    assert main(["prepare", "data", "--stage", "2", "--size", "4", "--image-root", f"coco={tmp_path / 'coco'}",
                 *common]) == 0

    expected = {"stage1": (5, "liuhaotian/LLaVA-Pretrain"), "stage1_5": (3, "lmms-lab/LLaVA-ReCap-118K"),
                "stage2": (4, "liuhaotian/LLaVA-Instruct-150K")}
    for folder, (samples, repo_id) in expected.items():
        body = require_manifest(tmp_path / "datasets" / folder, "dataset")
        assert body["metrics"]["samples"] == samples
        assert body["metrics"]["quarantined"] == 0
        assert body["extra"]["source"]["commit"] == commits[repo_id]
        assert body["extra"]["source"]["revision"] == (pinned_revision(repo_id) or "main")
        assert body["extra"]["source"]["origin"] == "hub"
        assert body["extra"]["source"]["pin"].startswith("pinned" if pinned_revision(repo_id) else "first-use")
    # only the files the source table names were fetched
    assert not hub.requests_for("GET", "blip_laion_cc_sbu_558k_meta.json")
    assert not hub.requests_for("GET", "llava_instruct_150k.json")
    assert not hub.requests_for("GET", "README.md")
    stage2 = json.loads((tmp_path / "datasets/stage2/data.json").read_text())
    assert not any("ocr_vqa" in entry.get("image", "") for entry in stage2)


def test_a_first_use_commit_is_recorded_and_reused_after_the_branch_moves(hub, tmp_path):
    commits = _publish_sources(hub, tmp_path)
    first = commits["lmms-lab/LLaVA-ReCap-118K"]
    base = ["prepare", "data", "--stage", "1.5", "--size", "3", "--endpoint", hub.url, "--workers", "1",
            "--downloads", str(tmp_path / "dl")]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    pins = json.loads((tmp_path / "dl/first_use.json").read_text())
    assert pins["dataset:lmms-lab/LLaVA-ReCap-118K@main"]["commit"] == first

    repo = hub.repo("lmms-lab/LLaVA-ReCap-118K", "dataset")
    repo.commit({"data/train-00000-of-00001.parquet": b"not parquet"}, "a later push")
    hub.clear_log()
    assert main([*base, "--out", str(tmp_path / "b")]) == 0  # the recorded commit, not the moved branch
    assert hub.requests_for(contains=f"/revision/{first}") and not hub.requests_for(contains="/revision/main")

    source = require_manifest(tmp_path / "b", "dataset")["extra"]["source"]
    assert source["commit"] == first and source["revision"] == "main"
    assert source["pin"] == (f"first-use, recorded {pins['dataset:lmms-lab/LLaVA-ReCap-118K@main']['recorded_at']} "
                             f"in {tmp_path / 'dl/first_use.json'}")
    assert (tmp_path / "b/data.json").read_bytes() == (tmp_path / "a/data.json").read_bytes()

    assert main([*base, "--out", str(tmp_path / "c"), "--revision", first]) == 0  # an explicit revision wins
    assert require_manifest(tmp_path / "c", "dataset")["extra"]["source"]["pin"] == "--revision"


def test_missing_revision_and_missing_repo_are_named(hub, tmp_path, capsys):
    _publish_sources(hub, tmp_path)
    base = ["prepare", "data", "--stage", "1", "--endpoint", hub.url, "--out", str(tmp_path / "o"),
            "--downloads", str(tmp_path / "dl")]

    assert main([*base, "--revision", "v9-does-not-exist"]) == 2
    assert "revision 'v9-does-not-exist' does not exist" in capsys.readouterr().err

    table = (Path(__file__).parents[1] / "llava/prepare/dataset_sources.yaml").read_text()
    (tmp_path / "sources.yaml").write_text(table.replace("liuhaotian/LLaVA-Pretrain", "nobody/no-such-data"))
    assert main([*base, "--sources", str(tmp_path / "sources.yaml")]) == 2
    assert "'nobody/no-such-data'" in capsys.readouterr().err


def test_prepare_models_cli_fills_the_models_volume(hub, tmp_path, monkeypatch, capsys):
    commits = [hub.add_repo(repo_id).commit({"config.json": b"{}", "model.safetensors": b"W" * 300,
                                              "pytorch_model.bin": b"PICKLE"}, oid=pinned_revision(repo_id))
               for repo_id in ("Qwen/Qwen2.5-0.5B-Instruct", "google/siglip-so400m-patch14-384")]
    monkeypatch.setenv("LLAVA_KIT_MODELS", str(tmp_path / "models"))

    assert main(["prepare", "models", "--endpoint", hub.url]) == 0

    for name, commit in zip(("qwen2.5-0.5b-instruct", "siglip-so400m-patch14-384"), commits):
        body = require_manifest(tmp_path / "models" / name, "model")
        assert body["extra"]["commit"] == commit
        assert not (tmp_path / "models" / name / "pytorch_model.bin").exists()
    assert "model ready: " in capsys.readouterr().out
