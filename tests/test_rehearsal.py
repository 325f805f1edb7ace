"""Dress rehearsal: README's GPU path walked end to end as compose services on the CPU image.

The one-command pipeline (`docker compose -f compose.yaml -f compose.pipeline.yaml up`) on fresh
volumes and with no Hub token: prepare, stage1, stage1_5, stage2 and eval run through, publish alone
stops and says how to give the token; then `docker compose run --rm publish` with the token, and an eval
whose suite's TSV has another MD5 (refused, naming the file). All over the shared volumes (host folders
via compose.hostdirs.yaml, so this test reads what each step wrote), with compose.ci.yaml (CPU image, no
GPU reservations) and compose.rehearsal.yaml (tiny smoke recipes, builtin eval, host networking).
Everything the containers fetch comes from loopback servers in this process: the Hub stand-in
(tests/fake_hub.py) holds the two models and the three datasets in their real layouts (LLaVA-Pretrain
JSON + images.zip, ReCap parquet, mix665k JSON), and the archive server (tests/archive_server.py) holds
COCO/GQA/TextVQA/VG image zips and the shapes benchmark TSV (the LMUData volume starts empty, as on a
fresh box). Publish pushes to the Hub stand-in.

Needs the engine and image that `.ci/docker-engine.sh --exec` provides (.ci/run's docker step sets
DOCKER_HOST, LLAVA_KIT_CPU_IMAGE and LLAVA_KIT_DOCKER_TESTS=1); without LLAVA_KIT_DOCKER_TESTS=1 it skips,
and with it but no engine it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from llava.owned import MARKER_NAME

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = Path(sys.executable).parent / "docker-compose"
PROJECT = "llava-kit-rehearsal"
FILES = ("compose.yaml", "compose.ci.yaml", "compose.hostdirs.yaml", "compose.rehearsal.yaml")
REPO_ID = "rehearsal/llava-kit-tiny"
TOKEN = "hf_rehearsal_token"
# mix665k source name -> (archive file, member folder): where each stage-2 image travels
STAGE2_SOURCES = (("coco", "train2017.zip", "train2017"), ("gqa", "images.zip", "images"),
                  ("textvqa", "train_val_images.zip", "train_images"), ("vg", "images.zip", "VG_100K"),
                  ("vg", "images2.zip", "VG_100K_2"))
SIZES = {"stage1": 32, "stage1_5": 16, "stage2": 40}  # subset sizes in the rehearsal's source table
PIPELINE = ("prepare", "stage1", "stage1_5", "stage2", "eval", "publish")
TSV_URL_PATH = "/benchmarks/shapes_colour.tsv"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(5400),
    pytest.mark.skipif(os.environ.get("LLAVA_KIT_DOCKER_TESTS") != "1",
                       reason="docker step of .ci/run: `.ci/docker-engine.sh --exec pytest -m docker` runs it"),
]


def _model_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in ("manifest.json", MARKER_NAME)}


def _records(world: Path, stage: str) -> list[dict]:
    return json.loads((world / "datasets" / stage / "data.json").read_text())


def _publish_inputs(world: Path, hub, archives, tmp: Path) -> dict[str, str]:
    """The shapes world in the real sources' formats; returns repo id -> commit."""
    from prepare_samples import recap_shard, zip_bytes
    from source_pins import pinned_revision as pin  # the commits the packaged sources files pin

    images = lambda stage: world / "datasets" / stage / "images"  # noqa: E731
    pretrain = _records(world, "stage1")
    members = {}
    for entry in pretrain:
        members[f"00000/{entry['image']}"] = (images("stage1") / entry["image"]).read_bytes()
        entry["image"] = f"00000/{entry['image']}"
    rows = [(entry["id"], (images("stage1_5") / entry["image"]).read_bytes(), entry["conversations"][1]["value"])
            for entry in _records(world, "stage1_5")]
    recap_shard(tmp / "recap.parquet", rows)
    mix, zips = [], {}
    for number, entry in enumerate(_records(world, "stage2")):
        if "image" in entry:
            source, archive, folder = STAGE2_SOURCES[number % len(STAGE2_SOURCES)]
            zips.setdefault((source, archive), {})[f"{folder}/{entry['image']}"] = \
                (images("stage2") / entry["image"]).read_bytes()
            entry["image"] = f"{source}/{folder}/{entry['image']}"
        mix.append(entry)
    mix += [{"id": f"ocr-{n}", "image": f"ocr_vqa/images/{n}.jpg", "conversations": mix[0]["conversations"]}
            for n in range(3)]  # the seed's filter drops these before sampling: no archive needed
    for (source, archive), files in zips.items():
        archives.files[f"/{source}/{archive}"] = zip_bytes(files)
    commits = {
        "Qwen/Qwen2.5-0.5B-Instruct": hub.add_repo("Qwen/Qwen2.5-0.5B-Instruct").commit(
            _model_files(world / "models" / "tiny-qwen2"), oid=pin("Qwen/Qwen2.5-0.5B-Instruct")),
        "google/siglip-so400m-patch14-384": hub.add_repo("google/siglip-so400m-patch14-384").commit(
            _model_files(world / "models" / "tiny-siglip"), oid=pin("google/siglip-so400m-patch14-384")),
        "liuhaotian/LLaVA-Pretrain": hub.add_repo("liuhaotian/LLaVA-Pretrain", "dataset").commit({
            "blip_laion_cc_sbu_558k.json": json.dumps(pretrain).encode(), "images.zip": zip_bytes(members)},
            oid=pin("liuhaotian/LLaVA-Pretrain")),
        "lmms-lab/LLaVA-ReCap-118K": hub.add_repo("lmms-lab/LLaVA-ReCap-118K", "dataset").commit({
            "data/train-00000-of-00001.parquet": (tmp / "recap.parquet").read_bytes()}),
        "liuhaotian/LLaVA-Instruct-150K": hub.add_repo("liuhaotian/LLaVA-Instruct-150K", "dataset").commit({
            "llava_v1_5_mix665k.json": json.dumps(mix).encode()}, oid=pin("liuhaotian/LLaVA-Instruct-150K")),
    }
    return commits


def _source_table(archives, folder: Path) -> Path:
    """The packaged table with the archive URLs on loopback and small subsets."""
    from llava.prepare.sources import DEFAULT_SOURCES

    table = yaml.safe_load(DEFAULT_SOURCES.read_text())
    table["stages"]["1.5"]["subset"] = {"size": SIZES["stage1_5"], "seed": 0}
    table["stages"]["2"]["subset"] = {"size": SIZES["stage2"], "seed": 0}
    urls: dict[str, list] = {}
    for source, archive, holds in STAGE2_SOURCES:
        urls.setdefault(source, []).append({"url": f"{archives.url}/{source}/{archive}", "holds": f"{holds}/"})
    table["stages"]["2"]["image_archives"] = urls
    path = folder / "dataset_sources.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return path


def _suites(archives, tsv: Path, folder: Path) -> None:
    """Eval suites whose TSV comes from the archive server: the right file, and one with another MD5."""
    from llava.packaged import packaged_path

    good = tsv.read_bytes()
    archives.files[TSV_URL_PATH] = good
    archives.files["/benchmarks/shapes_colour_edited.tsv"] = good.replace(b"\n", b"\r\n", 1)
    base = yaml.safe_load(packaged_path("eval/shapes_smoke.yaml").read_text())
    for name, file, path in (("shapes.yaml", "shapes_colour.tsv", TSV_URL_PATH),
                             ("shapes_wrong_md5.yaml", "shapes_colour_edited.tsv", "/benchmarks/shapes_colour_edited.tsv")):
        base["tsv"] = {"file": file, "md5": hashlib.md5(good).hexdigest(), "url": f"{archives.url}{path}"}
        (folder / name).write_text(yaml.safe_dump(base, sort_keys=False))


def _readable_by_the_image_user(path: Path) -> None:
    """uid 1000 in the containers must traverse and read these (pytest's tmp folders are 0700)."""
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)


class Rehearsal:
    """Runs one compose service at a time, keeping each step's log and wall time."""

    def __init__(self, base: Path, env: dict[str, str], capture):
        self.base, self.env, self.capture = base, env, capture
        self.logs = base / "logs"
        self.logs.mkdir()
        self.times: list[tuple[str, float, int]] = []

    def compose(self, *files: str) -> list[str]:
        cmd = [str(COMPOSE), "-p", PROJECT, "--project-directory", str(ROOT)]
        for name in (*FILES, *files):
            cmd += ["-f", str(ROOT / name)]
        return cmd

    def run(self, step: str, *args: str, extra_env: dict[str, str] | None = None, timeout: int = 1500,
            expect: int | None = 0, up: bool = False) -> str:
        """`compose run --rm` one service (or, with `up`, the pipeline file's `up`); exit code `expect`
        (None: any failure)."""
        cmd = self.compose("compose.pipeline.yaml") + ["up", *args] if up else \
            self.compose() + ["run", "--rm", "-T", *args]
        log = self.logs / (re.sub(r"[^A-Za-z0-9_.]+", "-", step).strip("-") + ".log")
        started = time.monotonic()
        with log.open("w") as sink:
            done = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**self.env, **(extra_env or {})},
                                  timeout=timeout, cwd=ROOT)
        seconds = time.monotonic() - started
        self.times.append((step, seconds, done.returncode))
        text = log.read_text(errors="replace")
        self.say(f"[rehearsal] {step}: exit {done.returncode} after {seconds:.0f} s (compose run {' '.join(args)})")
        ok = done.returncode != 0 if expect is None else done.returncode == expect
        assert ok, f"{step}: exit {done.returncode}, expected {expect} (log {log}):\n{text[-6000:]}"
        return text

    def exit_codes(self) -> dict[str, int]:
        """service -> exit code of its container left by `up` (`compose ps -a`)."""
        done = subprocess.run([*self.compose("compose.pipeline.yaml"), "ps", "-a", "--format", "json"], env=self.env,
                              capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
        text = done.stdout.strip()
        entries = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
        return {entry["Service"]: entry["ExitCode"] for entry in entries}

    def say(self, text: str) -> None:
        """Straight to the terminal, so .ci/run's log shows each step as it finishes."""
        with self.capture.global_and_fixture_disabled():
            print(text, flush=True)

    def down(self) -> None:
        cmd = self.compose("compose.pipeline.yaml")
        subprocess.run([*cmd, "--profile", "*", "down", "--volumes", "--remove-orphans"], env=self.env,
                       capture_output=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def rehearsal(request):
    from archive_server import ArchiveServer
    from fake_hub import FakeHub
    from llava.synthetic.instruct_llm import copy_instruct_llm
    from llava.synthetic.world import LLM_DIR, WorldSize, build_world, held_out_tsv

    if not (os.environ.get("DOCKER_HOST") and os.environ.get("LLAVA_KIT_CPU_IMAGE")):
        pytest.fail("LLAVA_KIT_DOCKER_TESTS=1 but no engine: run this through `.ci/docker-engine.sh --exec`, "
                    "which sets DOCKER_HOST and LLAVA_KIT_CPU_IMAGE")
    base = Path(tempfile.mkdtemp(prefix="llava-kit-rehearsal-", dir="/tmp"))
    world = build_world(base / "world", seed=0, size=WorldSize(stage1=SIZES["stage1"], stage1_5=24, stage2=56,
                                                               test_questions=8, text_only_fraction=0.2))
    # the shipped tiny instruct LLM as the Hub's Qwen stand-in: it answers in words, which publish's
    # load-and-generate check requires (a random tiny LLM answers only newlines, an empty answer)
    copy_instruct_llm(world / "models" / LLM_DIR)
    data = base / "data"
    for folder in ("models", "datasets", "checkpoints", "runs", "hf-cache", "LMUData"):
        (data / folder).mkdir(parents=True)  # all empty: a fresh box
    config, secrets, no_secrets = base / "config", base / "secrets", base / "no-secrets"
    for folder in (config, secrets, no_secrets):
        folder.mkdir()
    (secrets / "hf_token").write_text(TOKEN)
    with FakeHub(base / "hub", token=TOKEN) as hub, ArchiveServer() as archives:
        commits = _publish_inputs(world, hub, archives, base)
        _source_table(archives, config)
        _suites(archives, held_out_tsv(world), config)
        for folder in (config, secrets, no_secrets):
            _readable_by_the_image_user(folder)
        subprocess.run(["chown", "-R", "1000:1000", str(data)], check=True)
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("LLAVA_KIT_PROFILE", "LLAVA_KIT_IMAGE_ROOTS", "HF_"))}
        env.update({"LLAVA_KIT_DATA_ROOT": str(data), "LLAVA_KIT_REHEARSAL_DIR": str(config),
                    "HF_ENDPOINT": hub.url, "LLAVA_KIT_SECRETS_DIR": str(no_secrets), "HF_REPO_ID": REPO_ID,
                    "COMPOSE_PROJECT_NAME": PROJECT})
        walk = Rehearsal(base, env, request.config.pluginmanager.getplugin("capturemanager"))
        walk.hub, walk.archives, walk.commits, walk.data, walk.world = hub, archives, commits, data, world
        walk.secrets, walk.tsv = secrets, held_out_tsv(world)
        try:
            yield walk
        finally:
            walk.down()
            walk.say("\n[rehearsal] wall time per step (this box's load included):\n" + "\n".join(
                f"  {step:<30} {seconds:7.1f} s  exit {code}" for step, seconds, code in walk.times))
            if os.environ.get("LLAVA_KIT_REHEARSAL_KEEP") != "1":
                shutil.rmtree(base, ignore_errors=True)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_the_gpu_path_runs_end_to_end_on_the_cpu_image(rehearsal):
    data = rehearsal.data

    # the whole pipeline with `up`, no token anywhere: everything up to eval runs, publish alone stops
    log = rehearsal.run("pipeline up (no token)", "--abort-on-container-failure", up=True, expect=None,
                        timeout=3300)
    assert rehearsal.exit_codes() == {**{name: 0 for name in PIPELINE[:-1]}, "publish": 2}
    said = [line for line in log.splitlines() if line.startswith("publish") and "error:" in line]
    assert len(said) == 1 and "no Hugging Face token" in said[0], said
    assert "secrets/hf_token" in said[0] and "HF_TOKEN=hf_... docker compose run --rm publish" in said[0]

    # prepare: the models and all three datasets from the loopback Hub; stage-2 images from the archives
    for name, repo_id in (("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
                          ("siglip-so400m-patch14-384", "google/siglip-so400m-patch14-384")):
        body = _manifest(data / "models" / name)
        assert body["kind"] == "model" and body["extra"]["commit"] == rehearsal.commits[repo_id]
    for stage, repo_id in (("stage1", "liuhaotian/LLaVA-Pretrain"), ("stage1_5", "lmms-lab/LLaVA-ReCap-118K"),
                           ("stage2", "liuhaotian/LLaVA-Instruct-150K")):
        body = _manifest(data / "datasets" / stage)
        assert body["kind"] == "dataset", stage
        assert body["metrics"]["samples"] == SIZES[stage] and body["metrics"]["quarantined"] == 0, stage
        assert body["extra"]["source"]["commit"] == rehearsal.commits[repo_id], stage
    stage2 = _manifest(data / "datasets" / "stage2")["extra"]
    assert sorted((row["source"], row["file"]) for row in stage2["image_archives"]) == sorted(
        (source, archive) for source, archive, _ in STAGE2_SOURCES)
    assert stage2["pool"]["dropped"] == {"ocr_vqa": 3}
    assert "stage-2 image archives" in log and "total to download" in log
    for source, archive, _ in STAGE2_SOURCES:
        assert rehearsal.archives.gets(f"/{source}/{archive}") == [None], archive  # one full GET each

    # the three stages; stage 1 with the fast profile (compose.rehearsal.yaml), the others with nothing set
    profiles = {}
    for stage in ("stage1", "stage1_5", "stage2"):
        body = _manifest(data / "checkpoints" / stage)
        assert body["kind"] == "checkpoint" and body["extra"]["stage"] == stage
        assert body["extra"]["recipe"]["training"]["max_steps"] == 2
        profiles[stage] = (body["extra"]["recipe"]["profile"], body["extra"]["recipe"]["deepspeed"])
        assert (data / "checkpoints" / stage / "model.safetensors").is_file()
    assert profiles == {"stage1": ("fast", "fast"), "stage1_5": ("seed", "seed"), "stage2": ("seed", "seed")}

    # eval (builtin): the empty LMUData volume got the TSV from the suite's URL, once, checked by md5
    assert rehearsal.archives.gets(TSV_URL_PATH) == [None]
    assert (data / "LMUData" / "shapes_colour.tsv").read_bytes() == rehearsal.tsv.read_bytes()
    assert f"fetching Shapes_MMBench_Smoke's TSV from {rehearsal.archives.url}{TSV_URL_PATH}" in log
    results = json.loads((data / "runs" / "stage2" / "eval" / "results.json").read_text())
    assert results["backend"] == "builtin" and results["n_questions"] == 8
    overall = next(row["value"] for row in results["rows"] if row["name"] == "Overall")

    # a TSV with another md5 is refused, naming the file, and never takes the TSV's place
    log = rehearsal.run("eval (TSV with a wrong md5)", "eval", expect=2,
                        extra_env={"LLAVA_KIT_REHEARSAL_SUITE": "shapes_wrong_md5.yaml"})
    bad = "/data/LMUData/shapes_colour_edited.tsv.bad-md5"
    assert f"error: {bad}: the TSV downloaded from" in log and "Traceback" not in log
    assert not (data / "LMUData" / "shapes_colour_edited.tsv").exists()

    # publish alone, given the token as the secrets folder: the card carries the eval's numbers
    log = rehearsal.run("publish (token given)", "publish", extra_env={"LLAVA_KIT_SECRETS_DIR": str(rehearsal.secrets)})
    assert "commit: " in log
    repo = rehearsal.hub.repo(REPO_ID)
    files = repo.resolve("main").files
    assert "model.safetensors" in files and "config.json" in files
    card = files["README.md"].decode()
    assert f"| Overall | {100 * overall:.2f} |" in card
    assert f"value: {round(overall, 6)}" in card
    writes = rehearsal.hub.requests_for("POST", f"/api/models/{REPO_ID}/commit")
    assert writes and all({k.lower(): v for k, v in r["headers"].items()}.get("authorization") == f"Bearer {TOKEN}"
                          for r in writes)  # the token came from the mounted secrets folder


def test_prepare_with_user_roots_downloads_no_archive(rehearsal):
    """LLAVA_KIT_IMAGE_ROOTS bind-mounts the user's copies at /data/image-roots."""
    roots = rehearsal.base / "my-images"
    world_images = rehearsal.world / "datasets" / "stage2" / "images"
    mix = json.loads(rehearsal.hub.repo("liuhaotian/LLaVA-Instruct-150K", "dataset")
                     .resolve("main").files["llava_v1_5_mix665k.json"])
    for entry in mix:
        if "image" in entry and not entry["image"].startswith("ocr_vqa/"):
            target = roots / entry["image"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(world_images / Path(entry["image"]).name, target)
    _readable_by_the_image_user(roots)
    rehearsal.archives.requests.clear()

    rehearsal.run("prepare stage 2 (user roots)", "--entrypoint", "llava-kit", "prepare", "prepare", "data",
                  "--stage", "2", "--image-root", "/data/image-roots", "--out", "/data/datasets/stage2-user-roots",
                  "--downloads", "/data/datasets/.downloads-user-roots",
                  extra_env={"LLAVA_KIT_IMAGE_ROOTS": str(roots)})

    assert rehearsal.archives.requests == []
    body = _manifest(rehearsal.data / "datasets" / "stage2-user-roots")
    assert body["metrics"]["samples"] == SIZES["stage2"] and body["metrics"]["quarantined"] == 0
    assert body["extra"]["image_archives"] == []
    assert set(body["extra"]["image_roots"]) == {"coco", "gqa", "textvqa", "vg"}
    assert all(path.startswith("/data/image-roots/") for path in body["extra"]["image_roots"].values())
