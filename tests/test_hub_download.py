"""download_repo / fetch_repo against a loopback Hub, through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from llava.errors import KitError
from llava.prepare.hub import download_repo, fetch_repo
from fake_hub import FakeHub, allow_loopback

CHUNK = 10 * 1024 * 1024  # huggingface_hub writes downloads in 10 MiB chunks; a resume starts at a chunk edge


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    allow_loopback(monkeypatch)
    with FakeHub(tmp_path / "hub") as server:
        yield server


def _model_files(weights: bytes) -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "tiny"}',
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": weights,
        "pytorch_model.bin": b"PICKLE" * 100,
    }


def test_model_repo_downloads_only_allowed_files_byte_identical(hub, tmp_path):
    files = _model_files(os.urandom(200_000))
    commit = hub.add_repo("acme/tiny-model").commit(files)

    snap = fetch_repo("acme/tiny-model", tmp_path / "out", allow_patterns=["*.json", "*.safetensors"],
                      endpoint=hub.url)

    assert snap.commit == commit
    assert snap.files == ("config.json", "model.safetensors", "tokenizer.json")
    assert snap.total_bytes == sum(len(files[name]) for name in snap.files)
    for name in snap.files:
        assert (tmp_path / "out" / name).read_bytes() == files[name]
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()
    assert not hub.requests_for(contains="pytorch_model.bin")


def test_dataset_repo_downloads_through_dataset_endpoints(hub, tmp_path):
    files = {"data.json": b'[{"id": "1"}]', "images.zip": os.urandom(50_000)}
    hub.add_repo("acme/tiny-data", repo_type="dataset").commit(files)

    out = download_repo("acme/tiny-data", tmp_path / "data", repo_type="dataset", endpoint=hub.url)

    assert out == (tmp_path / "data").resolve()
    assert {name: (out / name).read_bytes() for name in files} == files
    assert hub.requests_for("GET", "/api/datasets/acme/tiny-data/revision/main")
    assert len(hub.requests_for("GET", "/datasets/acme/tiny-data/resolve/")) == 2


def test_interrupted_transfer_resumes_with_a_range_request(hub, tmp_path):
    weights = os.urandom(2 * CHUNK + 3 * 1024 * 1024)
    hub.add_repo("acme/tiny-model").commit(_model_files(weights))
    hub.cut_once["model.safetensors"] = 2 * CHUNK + 1024 * 1024  # hang up 21 MiB into 23 MiB

    download_repo("acme/tiny-model", tmp_path / "out", allow_patterns=["*.safetensors"], endpoint=hub.url)

    assert hashlib.sha256((tmp_path / "out" / "model.safetensors").read_bytes()).digest() == \
        hashlib.sha256(weights).digest()
    gets = hub.requests_for("GET", "/resolve/")
    assert [g["status"] for g in gets] == [200, 206]
    assert "Range" not in gets[0]["headers"]
    assert gets[1]["headers"]["Range"] == f"bytes={2 * CHUNK}-"  # resumed where the kept data ends, not from 0


def test_rerun_after_a_failed_download_fetches_only_what_is_missing(hub, tmp_path):
    files = _model_files(os.urandom(100_000))
    hub.add_repo("acme/tiny-model").commit(files)
    hub.fail_get["model.safetensors"] = 1

    with pytest.raises(KitError, match="acme/tiny-model"):
        download_repo("acme/tiny-model", tmp_path / "out", allow_patterns=["*.json", "*.safetensors"],
                      endpoint=hub.url)
    assert (tmp_path / "out" / "config.json").read_bytes() == files["config.json"]

    hub.clear_log()
    download_repo("acme/tiny-model", tmp_path / "out", allow_patterns=["*.json", "*.safetensors"], endpoint=hub.url)

    assert (tmp_path / "out" / "model.safetensors").read_bytes() == files["model.safetensors"]
    fetched = [r["path"].rsplit("/", 1)[1] for r in hub.requests_for("GET", "/resolve/")]
    assert fetched == ["model.safetensors"]


def test_pinned_revision_serves_that_revisions_bytes(hub, tmp_path):
    repo = hub.add_repo("acme/tiny-model")
    old = repo.commit({"config.json": b'{"v": "A"}'}, "A")
    repo.tag("v1", old)
    new = repo.commit({"config.json": b'{"v": "B"}'}, "B")

    by_tag = fetch_repo("acme/tiny-model", tmp_path / "tag", revision="v1", endpoint=hub.url)
    by_sha = fetch_repo("acme/tiny-model", tmp_path / "sha", revision=old, endpoint=hub.url)
    latest = fetch_repo("acme/tiny-model", tmp_path / "main", endpoint=hub.url)

    assert (by_tag.commit, by_sha.commit, latest.commit) == (old, old, new)
    assert (tmp_path / "tag" / "config.json").read_bytes() == b'{"v": "A"}'
    assert (tmp_path / "sha" / "config.json").read_bytes() == b'{"v": "A"}'
    assert (tmp_path / "main" / "config.json").read_bytes() == b'{"v": "B"}'


def test_unknown_revision_is_a_kit_error_naming_it(hub, tmp_path):
    hub.add_repo("acme/tiny-model").commit({"config.json": b"{}"})
    with pytest.raises(KitError, match=r"revision 'no-such-tag' does not exist.*acme/tiny-model"):
        download_repo("acme/tiny-model", tmp_path / "out", revision="no-such-tag", endpoint=hub.url)


def test_unknown_repo_is_a_kit_error_naming_it(hub, tmp_path):
    with pytest.raises(KitError, match=r"model repo 'acme/missing' .*does not exist"):
        download_repo("acme/missing", tmp_path / "out", endpoint=hub.url)
    with pytest.raises(KitError, match=r"dataset repo 'acme/missing' .*does not exist"):
        download_repo("acme/missing", tmp_path / "out", repo_type="dataset", endpoint=hub.url)


def test_offline_mode_is_a_kit_error_saying_so(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub.add_repo("acme/tiny-model").commit({"config.json": b"{}"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(KitError, match="HF_HUB_OFFLINE is set"):
        download_repo("acme/tiny-model", tmp_path / "out", endpoint=hub.url)
    assert not hub.requests


def test_endpoint_comes_from_hf_endpoint_when_not_given(hub, tmp_path, monkeypatch):
    hub.add_repo("acme/tiny-model").commit({"config.json": b"{}"})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    download_repo("acme/tiny-model", tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_bytes() == b"{}"
    assert hub.requests_for("HEAD", "/acme/tiny-model/resolve/")


def test_repo_larger_than_free_space_is_refused_before_any_transfer(hub, tmp_path):
    hub.add_repo("acme/huge-model").commit({"config.json": b"{}", "model.safetensors": b"x" * 1000})
    hub.listed_sizes["model.safetensors"] = 1 << 60  # the listing says one exbibyte

    with pytest.raises(KitError, match=r"not enough disk space .*acme/huge-model"):
        download_repo("acme/huge-model", tmp_path / "out", endpoint=hub.url)
    assert not hub.requests_for(contains="/resolve/")


def test_unwritable_target_is_a_kit_error_naming_the_path(hub, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(KitError, match="cannot create download folder .*not-a-dir/models"):
        download_repo("acme/tiny-model", blocker / "models", endpoint=hub.url)
    assert not hub.requests  # refused before any traffic


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk. Needs mount rights (root in a container); skipped elsewhere."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.filterwarnings("ignore:Not enough free disk space")
def test_disk_filling_up_mid_download_is_a_kit_error(hub, tmp_path, small_disk):
    hub.add_repo("acme/tiny-model").commit({"model.safetensors": os.urandom(3 * 1024 * 1024)})
    hub.listed_sizes["model.safetensors"] = 10  # a mirror that under-reports sizes: the pre-check passes

    with pytest.raises(KitError, match="disk full while downloading model repo 'acme/tiny-model'"):
        download_repo("acme/tiny-model", small_disk / "out", endpoint=hub.url)
