"""`llava-kit publish` in a subprocess, through the real huggingface_hub client, to a loopback Hub.

Xet is disabled (HF_HUB_DISABLE_XET=1) so the client takes the plain preupload / LFS batch / commit
path that the fake Hub implements. The token is a distinctive string so it can be searched for
everywhere it must not be.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_hub import FakeHub
from publish_world import build_world

REPO_ID = "acme/llava-kit-0.5b"
TOKEN = "hf_SECRETtokenDoNotLeak0123456789abcd"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("publish")
    world = build_world(root / "world")
    secret = root / "secrets" / "hf_token"
    secret.parent.mkdir()
    secret.write_text(TOKEN + "\n")
    with FakeHub(root / "hub", token=TOKEN) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(world.env(), HF_TOKEN_PATH=str(secret), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(root / "hf-home"))

        def run(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "llava.cli", "publish", str(world.checkpoint), "--repo-id", REPO_ID, *extra],
                env=env, capture_output=True, text=True, timeout=300,
            )

        def history() -> list[str]:
            repo = hub.repos.get(("model", REPO_ID))
            return list(repo.history) if repo else []

        runs = {"first": run("--private")}
        runs["first_requests"] = list(hub.requests)
        runs["commits_after_first"] = history()
        hub.clear_log()
        runs["second"] = run()
        runs["second_requests"] = list(hub.requests)
        runs["commits_after_second"] = history()
        runs["dry"] = run("--dry-run", str(root / "dry"))
        hub.clear_log()
        runs["changed"] = _push_changed_card(root, env)
        runs["changed_requests"] = list(hub.requests)
        yield {"hub": hub, "world": world, "root": root, "runs": runs}


def _push_changed_card(root: Path, env: dict) -> subprocess.CompletedProcess:
    """Push the dry-run folder with an edited card (no torch import: push_folder alone)."""
    edited = root / "edited"
    shutil.copytree(root / "dry", edited)
    readme = edited / "README.md"
    readme.write_text(readme.read_text().replace("| Overall | 50.00 |", "| Overall | 62.50 |"))
    code = ("import sys; from pathlib import Path; from llava.publish.hub_push import push_folder, require_token; "
            f"o = push_folder(Path(sys.argv[1]), {REPO_ID!r}, token=require_token(), private=False, "
            "commit_message='edit card'); print(o.commit_url, sorted(o.changed))")
    return subprocess.run([sys.executable, "-c", code, str(edited)], env=env, capture_output=True, text=True,
                          timeout=120)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_first_publish_uploads_every_file_with_its_commit_message(setup):
    hub, world = setup["hub"], setup["world"]
    stdout = _ok(setup["runs"]["first"])
    repo = hub.repo(REPO_ID)
    assert repo.private  # --private reached create_repo
    first_commit = repo.commits[repo.history[1]]
    assert first_commit.message.startswith("llava-kit: publish stage2 (weights ")
    assert world.weights_sha in first_commit.description
    received = setup["root"] / "hub" / "received" / "models" / REPO_ID
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json", "preprocessor_config.json", "manifest.json"):
        assert (received / name).read_bytes() == (world.checkpoint / name).read_bytes(), name
    assert (received / "chart.png").read_bytes() == (world.results.parent / "chart.png").read_bytes()
    assert "| Overall | 50.00 |" in first_commit.files["README.md"].decode()
    assert f"commit: {hub.url}/{REPO_ID}/commit/{repo.history[1]}" in stdout
    # the weights went through the LFS path, config files inline in the commit
    puts = [r for r in setup["runs"]["first_requests"] if r["method"] == "PUT"]
    assert len(puts) == 2  # model.safetensors and chart.png


def test_second_publish_of_the_same_checkpoint_uploads_nothing(setup):
    stdout = _ok(setup["runs"]["second"])
    assert "nothing to upload" in stdout
    requests = setup["runs"]["second_requests"]
    assert not [r for r in requests if r["method"] == "PUT"]
    assert not [r for r in requests if "/commit/" in r["path"] or "/preupload/" in r["path"]]
    assert setup["runs"]["commits_after_second"] == setup["runs"]["commits_after_first"]  # no new commit
    assert len(setup["runs"]["commits_after_first"]) == 2  # the repo's initial commit and the first publish


def test_changed_card_commits_only_the_changed_file(setup):
    hub = setup["hub"]
    stdout = _ok(setup["runs"]["changed"])
    assert stdout.strip().endswith("['README.md']")
    requests = setup["runs"]["changed_requests"]
    assert not [r for r in requests if r["method"] == "PUT"]  # weights and chart were not re-uploaded
    [commit_request] = [r for r in requests if "/commit/" in r["path"]]
    body = (setup["root"] / "hub" / "bodies" / commit_request["body_file"]).read_text()
    assert [json.loads(line)["value"]["path"] for line in body.splitlines()[1:]] == ["README.md"]
    repo = hub.repo(REPO_ID)
    assert "| Overall | 62.50 |" in repo.commits[repo.refs["main"]].files["README.md"].decode()


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_token_never_leaks(setup):
    root, runs = setup["root"], setup["runs"]
    _ok(runs["dry"])
    for name in ("first", "second", "dry", "changed"):
        assert TOKEN not in runs[name].stdout and TOKEN not in runs[name].stderr, name
    needle = TOKEN.encode()
    assert not _files_containing(root / "dry", needle)
    assert not _files_containing(root / "hub" / "received", needle)
    assert not _files_containing(root / "hub" / "bodies", needle)  # nothing the client sent carried it
    assert not _files_containing(root / "world" / "checkpoints", needle)
    logged = [json.loads(line) for line in (root / "hub" / "requests.jsonl").read_text().splitlines()]
    carried = [r for r in logged if {k.lower(): v for k, v in r["headers"].items()}.get("authorization")
               == f"Bearer {TOKEN}"]
    assert carried  # control: the client did send the token, as an Authorization header
    for request in logged:
        others = {k: v for k, v in request["headers"].items() if k.lower() != "authorization"}
        assert TOKEN not in json.dumps(others) and TOKEN not in request["path"]


@pytest.mark.parametrize("xet", ["1", "0"])
def test_publish_to_an_unreachable_hub_is_a_message_not_a_traceback(setup, xet):
    """A Hub that refuses connections (a loopback port nobody listens on), with and without Xet."""
    from llava.train.distributed import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    endpoint = f"http://127.0.0.1:{free_port()}"
    env.update(setup["world"].env(), HF_TOKEN=TOKEN, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET=xet,
               HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(setup["root"] / "hf-home-unreachable"),
               HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    done = subprocess.run([sys.executable, "-m", "llava.cli", "publish", str(setup["world"].checkpoint),
                           "--repo-id", REPO_ID], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"cannot reach {endpoint}" in done.stderr and REPO_ID in done.stderr
    assert TOKEN not in done.stdout + done.stderr
