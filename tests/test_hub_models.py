"""prepare_models: both base models from a loopback Hub, safetensors only, with manifests naming the commit."""

from __future__ import annotations

import json

import pytest
import yaml

from llava.errors import KitError
from llava.manifest import require_manifest
from llava.prepare.models import load_sources, prepare_models
from fake_hub import FakeHub, allow_loopback
from source_pins import pinned_revision

QWEN = {
    "config.json": b'{"model_type": "qwen2"}', "generation_config.json": b"{}",
    "model.safetensors": b"Q" * 5000, "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
    "vocab.json": b"{}", "merges.txt": b"#v\n", "LICENSE": b"Apache-2.0",
    "pytorch_model.bin": b"PICKLE", "onnx/model.onnx": b"ONNX",
}
SIGLIP = {
    "config.json": b'{"model_type": "siglip"}', "preprocessor_config.json": b"{}",
    "model.safetensors": b"S" * 5000, "spiece.model": b"SP", "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}", "pytorch_model.bin": b"PICKLE", "open_clip_pytorch_model.bin": b"PICKLE",
}


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    allow_loopback(monkeypatch)
    with FakeHub(tmp_path / "hub") as server:
        for repo_id, files in (("Qwen/Qwen2.5-0.5B-Instruct", QWEN), ("google/siglip-so400m-patch14-384", SIGLIP)):
            server.add_repo(repo_id).commit(files, oid=pinned_revision(repo_id))
        yield server


def test_prepare_models_fetches_both_models_without_pickles(hub, tmp_path):
    folders = prepare_models(tmp_path / "models", endpoint=hub.url)

    assert [f.name for f in folders] == ["qwen2.5-0.5b-instruct", "siglip-so400m-patch14-384"]
    for folder, repo_id, files in zip(folders, ["Qwen/Qwen2.5-0.5B-Instruct", "google/siglip-so400m-patch14-384"],
                                      [QWEN, SIGLIP]):
        manifest = require_manifest(folder, "model")
        assert manifest["extra"]["repo_id"] == repo_id
        assert manifest["extra"]["revision"] == manifest["extra"]["commit"] == pinned_revision(repo_id)
        fetched = set(manifest["files"])
        assert "model.safetensors" in fetched and "config.json" in fetched
        assert not any(name.endswith((".bin", ".onnx")) for name in fetched)
        assert not any(name.startswith(".cache") for name in fetched)
        for name in fetched:
            assert (folder / name).read_bytes() == files[name]
    assert not hub.requests_for(contains=".bin")


def test_second_prepare_transfers_no_file_again(hub, tmp_path):
    prepare_models(tmp_path / "models", endpoint=hub.url)
    hub.clear_log()
    folders = prepare_models(tmp_path / "models", endpoint=hub.url)
    assert not hub.requests_for("GET", "/resolve/")
    for folder in folders:
        require_manifest(folder, "model")


def test_revision_file_pins_an_older_commit(hub, tmp_path):
    repo = hub.repo("Qwen/Qwen2.5-0.5B-Instruct")
    pinned = repo.refs["main"]
    repo.commit({**QWEN, "config.json": b'{"model_type": "qwen2", "newer": true}'}, "update")
    sources = {"models": [{"name": "qwen2.5-0.5b-instruct", "repo_id": "Qwen/Qwen2.5-0.5B-Instruct",
                           "revision": pinned, "allow_patterns": ["*.json", "*.safetensors"]}]}
    revision_file = tmp_path / "revisions.yaml"
    revision_file.write_text(yaml.safe_dump(sources))

    [folder] = prepare_models(tmp_path / "models", endpoint=hub.url, sources=revision_file)

    assert json.loads((folder / "config.json").read_text()) == {"model_type": "qwen2"}
    assert require_manifest(folder, "model")["extra"]["commit"] == pinned


def test_packaged_sources_name_the_two_base_models():
    sources = {s.name: s for s in load_sources()}
    assert sources["qwen2.5-0.5b-instruct"].repo_id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert sources["siglip-so400m-patch14-384"].repo_id == "google/siglip-so400m-patch14-384"


@pytest.mark.parametrize("pattern", ["*", "*.bin", "pytorch_model.*"])
def test_a_pattern_that_would_fetch_pickles_is_refused(tmp_path, pattern):
    revision_file = tmp_path / "revisions.yaml"
    revision_file.write_text(yaml.safe_dump({"models": [
        {"name": "m", "repo_id": "a/b", "revision": "main", "allow_patterns": [pattern]}]}))
    with pytest.raises(KitError, match=r"revisions\.yaml: key 'models\.0\.allow_patterns'.*pickled"):
        load_sources(revision_file)
