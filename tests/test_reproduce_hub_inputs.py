"""`reproduce` prepares Hub datasets at the recorded commit from the published subset index, and names the
first sample that differs when the dataset changed upstream (its history rewritten, one caption edited).

Publisher and reproducer both run the real `prepare data` code against the loopback Hub; the record's
dataset entry is the one `publish` writes (llava.publish.run_record.dataset_entry).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fake_hub import FakeHub, allow_loopback
from prepare_samples import image_bytes, recap_shard

REPO = "lmms-lab/LLaVA-ReCap-118K"
SHARD = "data/train-00000-of-00001.parquet"
RECIPE = {"data": {"path": "{datasets}/stage1_5/data.json", "image_folder": "{datasets}/stage1_5/images"}}


def _rows(changed: str | None = None) -> list:
    return [(f"{n:012d}", image_bytes(size=(50, 40), seed=n),
             f"Detailed caption {n}." + (" Edited." if f"{n:012d}" == changed else "")) for n in range(10)]


def _layout(root: Path):
    from llava.paths import VolumeLayout

    return VolumeLayout(models=root / "models", datasets=root / "datasets", checkpoints=root / "checkpoints",
                        runs=root / "runs", hf_cache=root / "hf-cache")


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A ReCap repo on the loopback Hub, a 4-sample subset prepared from it, and the record of that dataset."""
    from llava.prepare.prepare_data import DataOptions, prepare_data
    from llava.publish.run_record import dataset_entry
    from llava.reproduce.record import LoadedRecord

    allow_loopback(monkeypatch)
    with FakeHub(tmp_path / "hub") as hub:
        repo = hub.add_repo(REPO, "dataset")
        commit = repo.commit({SHARD: recap_shard(tmp_path / "v1.parquet", _rows()).read_bytes()})
        publisher = _layout(tmp_path / "publisher")
        prepare_data(DataOptions(stage="1.5", out=publisher.datasets / "stage1_5", endpoint=hub.url, size=4,
                                 downloads=publisher.datasets / ".downloads", workers=1))
        folder, files = tmp_path / "record", {}
        entry = dataset_entry("stage1_5", RECIPE, publisher, folder, files)
        for rel, source in files.items():  # what publish uploads beside the record
            if not (folder / rel).exists():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, folder / rel)
        body = {"stages": [{"name": "stage1_5", "dataset": entry, "models": {}}]}
        yield {"hub": hub, "repo": repo, "commit": commit, "record": LoadedRecord(body, folder, "test"),
               "publisher": publisher, "root": tmp_path}


def test_the_recorded_subset_is_prepared_again_at_the_recorded_commit(published):
    from llava.reproduce.inputs import check_inputs, prepare_inputs

    record, entry = published["record"], published["record"].body["stages"][0]["dataset"]
    assert entry["repo_id"] == REPO and entry["commit"] == published["commit"] and entry["samples"] == 4
    assert entry["subset"]["size"] == 4 and entry["subset"]["file"] == "subsets/stage1_5_subset_index.json"
    published["repo"].commit({SHARD: b"a later commit on main that the recorded commit pins away"})
    here = _layout(published["root"] / "reproducer")
    notes = prepare_inputs(record, here, ["stage1_5"], published["hub"].url, say=lambda line: None)
    [check] = check_inputs(record, here, ["stage1_5"], notes)
    assert check.matches is True and check.dataset == REPO and check.note == ""
    mine = json.loads((here.datasets / "stage1_5" / "data.json").read_text())
    theirs = json.loads((published["publisher"].datasets / "stage1_5" / "data.json").read_text())
    assert [r["id"] for r in mine] == [r["id"] for r in theirs] and len(mine) == 4


def test_a_dataset_changed_upstream_names_the_first_differing_sample(published):
    from llava.reproduce.inputs import check_inputs, prepare_inputs

    record, repo = published["record"], published["repo"]
    ids = json.loads((record.folder / "subsets" / "stage1_5_subset_index.json").read_text())["ids"]
    changed = ids[2]
    # the maintainers squash the history and edit one caption: the recorded commit is gone
    repo.commits.pop(published["commit"])
    repo.commit({SHARD: recap_shard(published["root"] / "v2.parquet", _rows(changed)).read_bytes()})
    here = _layout(published["root"] / "reproducer-2")
    notes = prepare_inputs(record, here, ["stage1_5"], published["hub"].url, say=lambda line: None)
    [check] = check_inputs(record, here, ["stage1_5"], notes)
    assert check.matches is False and check.dataset == REPO and check.first_sample == changed
    assert f"recorded commit {published['commit'][:12]} is gone from {REPO}" in check.note
    assert f"first differing sample {changed}" in check.note
