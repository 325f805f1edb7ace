"""No file in the repository pairs a torch version with a CUDA build or index PyTorch does not publish.

The table of what PyTorch publishes is llava/resources/torch_cuda.yaml (sources cited there). Scanned:
every tracked Dockerfile, lock, requirements file, compose file, script, README and doc, and the
messages in llava/ (tests/ and the table itself are left out: they name wrong pairings on purpose).
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from llava.torch_builds import load_matrix, published, torchvision_install

ROOT = Path(__file__).resolve().parents[1]
MATRIX = load_matrix()
TORCH_PIN = next(spec.split("==")[1] for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["dependencies"] if spec.startswith("torch=="))
TABLE = "llava/resources/torch_cuda.yaml"
SCANNED = re.compile(r"(Dockerfile|\.lock|\.in|\.txt|\.md|\.ya?ml|\.py|\.sh|\.toml|\.env|^\.ci/run)$")

LABELLED_VERSION = re.compile(r"\b(\d+\.\d+\.\d+)\+(cu\d{3})\b")            # 2.13.0+cu126
INDEX_URL = re.compile(r"download(?:-r2)?\.pytorch\.org/whl/(cu\d{3})\b")     # .../whl/cu126
CUDA_LABEL = re.compile(r"\bcu(\d{3})\b")
CUDA_VERSION = re.compile(r"\bcuda[ =:]+(\d+\.\d+)\b", re.IGNORECASE)


def scanned_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / name for name in listed.splitlines()
            if SCANNED.search(name) and not name.startswith("tests/") and name != TABLE and (ROOT / name).is_file()]


def line_problems(line: str, torch_pin: str, matrix: dict) -> list[str]:
    """Every torch/CUDA pairing on one line that PyTorch does not publish."""
    problems = []
    builds = matrix["torch"][torch_pin]["builds"]
    for version, label in LABELLED_VERSION.findall(line):
        if version in matrix["torch"] and not published(matrix, version, label):
            problems.append(f"{version}+{label}: PyTorch publishes {version} only as {', '.join(builds)}")
    for label in INDEX_URL.findall(line):
        if not published(matrix, torch_pin, label):
            problems.append(f"PyTorch's {label} index has no torch {torch_pin} (the repo's pin)")
    if re.search(rf"(?<![\d.]){re.escape(torch_pin)}(?![\d])", line):
        for digits in CUDA_LABEL.findall(line):
            if not published(matrix, torch_pin, f"cu{digits}"):
                problems.append(f"cu{digits} beside {torch_pin}: no such build")
        cudas = {build["cuda"] for build in builds.values()}
        for cuda in CUDA_VERSION.findall(line):
            if cuda not in cudas:
                problems.append(f"CUDA {cuda} beside {torch_pin}: its builds are CUDA {', '.join(sorted(cudas))}")
    return problems


def scan(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            found += [f"{path.relative_to(root)}:{number}: {problem}" for problem in
                      line_problems(line, TORCH_PIN, MATRIX)]
    return found


def test_no_file_pairs_torch_with_an_unpublished_cuda_build():
    files = scanned_files()
    assert any(p.name == "Dockerfile" for p in files) and any(p.name == "README.md" for p in files)
    assert scan(files) == []


@pytest.mark.parametrize("text", [
    "pip install --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0",
    "expected: torch 2.13.0+cu128 cuda 12.8",
    "ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128",
    "torch 2.13.0 (cu128, from the PyTorch index)",
    "`pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cu124` for torch 2.13.0",
    "torch==2.13.0 is built for CUDA 12.8",
])
def test_the_scan_catches_each_form_of_a_wrong_pairing(text):
    assert line_problems(text, "2.13.0", MATRIX)


@pytest.mark.parametrize("text", [
    "pip install --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0+cu126",
    "torch 2.13.0 cuda 13.0 (PyPI's build)",
    "torch 2.13.0+cu130",
    "PyTorch stopped publishing cu128 builds after 2.11",
])
def test_the_scan_passes_published_pairings(text):
    assert line_problems(text, "2.13.0", MATRIX) == []


def test_the_scan_reads_a_file_with_cu128_put_back(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text() + "\npip install --index-url "
                      "https://download.pytorch.org/whl/cu128 torch==2.13.0\n")
    lines = readme.read_text().splitlines()
    assert scan([readme], tmp_path) == [f"README.md:{len(lines)}: PyTorch's cu128 index has no torch 2.13.0 "
                                        "(the repo's pin)", f"README.md:{len(lines)}: cu128 beside 2.13.0: no such build"]


def test_no_image_starts_from_an_nvidia_cuda_tag():
    for dockerfile in (ROOT / "docker").glob("*Dockerfile"):
        assert "nvidia/cuda:" not in dockerfile.read_text(), dockerfile


def test_gpu_locks_hold_one_cuda_major_matching_their_torch_build():
    pypi_build = next(b for b in MATRIX["torch"][TORCH_PIN]["builds"].values() if b["pypi"])
    for lock in ROOT.glob("docker/requirements-*.lock"):
        text = lock.read_text()
        torch_line = re.search(r"^torch==(\S+)", text, re.M)
        if torch_line is None or "+cpu" in torch_line[1]:
            continue
        version, _, label = torch_line[1].partition("+")
        build = MATRIX["torch"][version]["builds"][label] if label else pypi_build
        major = build["cuda"].split(".")[0]
        for suffix in re.findall(r"^nvidia-[a-z-]+?-cu(\d+)==", text, re.M):
            assert suffix == major, f"{lock.name}: a cu{suffix} library beside torch's CUDA {build['cuda']}"
        for name in ("nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc"):
            pin = re.search(rf"^{name}==(\d+\.\d+)\.", text, re.M)
            if pin:
                assert pin[1] == build["cuda"], f"{lock.name}: {name} {pin[1]} beside torch's CUDA {build['cuda']}"
        assert "--hash=sha256:" in torch_line.string.splitlines()[text[:torch_line.start()].count("\n")]


def test_dockerfile_arch_lists_are_the_tables():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    for variant, spec in MATRIX["variants"].items():
        stage = re.search(rf"FROM os AS toolchain-{variant}\n(.*?)(?:\n\n|\Z)", text, re.S)
        assert stage, variant
        archs = re.search(r'TORCH_CUDA_ARCH_LIST="([^"]+)"', stage[1])[1]
        assert archs.split(";") == spec["arch_list"]
        assert f"LLAVA_KIT_IMAGE_VARIANT={variant}" in stage[1]


def test_every_variant_names_a_published_build():
    for variant, spec in MATRIX["variants"].items():
        assert published(MATRIX, TORCH_PIN, spec["build"]), variant
        build = MATRIX["torch"][TORCH_PIN]["builds"][spec["build"]]
        assert spec["arch_list"][-1] in build["archs"] or float(spec["arch_list"][-1]) <= float(build["archs"][-1])


def test_torchvision_install_line_follows_the_torch_build():
    assert torchvision_install("2.13.0") == "pip install torchvision==0.28.0"
    assert torchvision_install("2.13.0+cu126") == \
        "pip install torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cu126"
    assert torchvision_install("2.13.0+cpu").endswith("--index-url https://download.pytorch.org/whl/cpu")
    assert torchvision_install("2.13.0+cu128") is None and torchvision_install("2.9.0") is None
