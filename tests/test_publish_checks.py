"""Publish refuses a repo id the Hub would refuse, a model that answers nothing, and a dry-run folder that
shares files with the checkpoint; every published file gets one mode."""

from __future__ import annotations

import json
import stat

import pytest

from llava.cli import main
from llava.errors import KitError
from llava.manifest import sha256_file
from llava.owned import OutputRefused
from llava.publish.repo_folder import FILE_MODE, Extras, assemble

CHECKPOINT = {"model.safetensors": "w", "config.json": "{}", "generation_config.json": "{}",
              "tokenizer.json": "{}", "chat_template.jinja": "t", "preprocessor_config.json": "{}"}


@pytest.mark.parametrize("repo_id, named", [
    ("me/not valid!!", "must use alphanumeric chars"),
    ("me/x..y", "Cannot have -- or .. in repo_id"),
    ("me/-dash", "cannot start or end with '-' or '.'"),
    ("just-a-name", "must look like ORG/NAME"),
])
def test_a_repo_id_the_hub_refuses_is_refused_before_anything_is_built(repo_id, named, tmp_path, capsys):
    out = tmp_path / "dry"
    rc = main(["publish", str(tmp_path / "no-checkpoint"), "--repo-id", repo_id, "--dry-run", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"--repo-id {repo_id!r}" in err and named in err, err
    assert not out.exists()


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    for name, text in CHECKPOINT.items():
        (folder / name).write_text(text)
    (folder / "model.safetensors").chmod(0o600)  # what safetensors leaves behind
    return folder


def test_dry_run_files_are_copies_with_one_mode(checkpoint, tmp_path):
    results = tmp_path / "results.json"
    results.write_text("{}")
    out = assemble(checkpoint, tmp_path / "dry", "card", Extras({"eval/results.json": results}))
    published = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert {p.relative_to(out).as_posix() for p in published} == {*CHECKPOINT, "README.md", "eval/results.json"}
    for path in published:
        info = path.stat()
        assert info.st_nlink == 1, f"{path} is a hard link"
        assert stat.S_IMODE(info.st_mode) == FILE_MODE == 0o644, (path, oct(info.st_mode))
    before = sha256_file(checkpoint / "model.safetensors")
    (out / "model.safetensors").write_text("edited in the dry-run folder")
    assert sha256_file(checkpoint / "model.safetensors") == before
    assert stat.S_IMODE((checkpoint / "model.safetensors").stat().st_mode) == 0o600  # the checkpoint is not touched


@pytest.mark.parametrize("where, named", [
    ("inside", "is inside this run's input checkpoint"),
    ("user", "already exists and was not written by llava-kit"),
])
def test_dry_run_folder_may_not_sit_in_the_checkpoint_or_replace_a_users_folder(where, named, checkpoint, tmp_path):
    if where == "inside":
        out = checkpoint / "dry"
    else:
        out = tmp_path / "mine"
        out.mkdir()
        (out / "thesis.txt").write_text("mine")
    before = {p.name: sha256_file(p) for p in checkpoint.iterdir() if p.is_file()}
    with pytest.raises(OutputRefused, match=named):
        assemble(checkpoint, out, "card", Extras({}))
    assert {p.name: sha256_file(p) for p in checkpoint.iterdir() if p.is_file()} == before
    assert where == "inside" or (out / "thesis.txt").read_text() == "mine"


@pytest.mark.timeout(300)
def test_the_gate_refuses_a_model_that_answers_nothing(tmp_path):
    """A checkpoint whose first token is always <|im_end|> loads and generates, but says nothing."""
    from publish_world import _tiny_checkpoint
    from transformers import AutoTokenizer

    from llava.publish.load_check import check_loads_and_generates

    folder = _tiny_checkpoint(tmp_path)
    assert check_loads_and_generates(folder).strip()  # the shipped instruct stand-in answers in words
    tokenizer = AutoTokenizer.from_pretrained(folder)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    vocab = json.loads((folder / "config.json").read_text())["text_config"]["vocab_size"]
    config = json.loads((folder / "generation_config.json").read_text())
    config["suppress_tokens"] = [i for i in range(vocab) if i != im_end]
    (folder / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(KitError, match=r"failed the load-and-generate check: the answer to .* is empty"):
        check_loads_and_generates(folder)
