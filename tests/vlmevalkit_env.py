"""A virtual environment holding VLMEvalKit's real code (the pinned PyPI artifact) for the CPU tests.

Built once and cached under build/ (git-ignored); rebuilt when its inputs change. It layers on the
kit's own environment (a .pth line adds the kit's site-packages, so torch 2.13.0+cpu, transformers and
llava-kit are the very ones the kit tests use) and adds, from PyPI:
- the VLMEvalKit artifact of docker/vlmevalkit.txt, with its sha256 checked by pip (--require-hashes);
- the modules `import vlmeval` and run.py's MMBench path ask for and the kit lacks, at the versions
  of docker/requirements-eval.lock (the eval image's lock);
- torchvision at the lock's version paired with torch (vlmeval.dataset imports it). PyPI's build is a
  CUDA one whose compiled ops do not register beside the CPU torch ("operator torchvision::nms does
  not exist"); `vlmevalkit_cpu_shim` (installed into this venv only, loaded by a .pth line) declares
  the nms/qnms schemas before torchvision loads so its pure-Python transforms import. Nothing of it
  is in the kit or in VLMEvalKit's files.
Cost, measured on the shared, loaded 2-core box with a warm pip cache: cold 70-140 s, warm 0 s.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIN_FILE = REPO / "docker" / "vlmevalkit.txt"
EVAL_LOCK = REPO / "docker" / "requirements-eval.lock"
ENV_DIR = REPO / "build" / "vlmevalkit-cpu-env"
# What vlmeval's imports need beyond the kit's environment (found by importing it), installed
# without their dependencies at the eval lock's versions.
EXTRA_PACKAGES = (
    "termcolor", "validators", "sty", "openai", "sniffio", "distro", "jiter", "portalocker",
    "datasets", "multiprocess", "dill", "xxhash", "timeout-decorator", "levenshtein", "rapidfuzz",
    "joblib", "cloudpickle", "decord", "jieba", "nltk", "rouge", "six", "math-verify",
    "latex2sympy2-extended", "antlr4-python3-runtime", "pylatexenc", "opencv-python", "imageio", "scipy",
    "json-repair", "num2words", "scikit-learn", "narwhals", "threadpoolctl", "qwen-vl-utils", "xlsxwriter",
    "tabulate",
    "torchvision",
)
SHIM = '''"""Test-venv only: declare torchvision's compiled-op schemas the CUDA wheel cannot register on CPU torch."""
import torch

if not hasattr(torch.ops.torchvision, "nms"):
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
'''


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in EVAL_LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split()[0]  # the lock's `--hash=sha256:...` stays out
    return pins


def extra_requirements() -> list[str]:
    pins = locked_versions()
    return [f"{name}=={pins[name]}" for name in EXTRA_PACKAGES]


def _stamp() -> str:
    inputs = [PIN_FILE.read_text(), "\n".join(extra_requirements()), SHIM, sys.version, _kit_site_packages()]
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()


def _kit_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", *args],
                   check=True, timeout=900)


def vlmevalkit_python() -> Path:
    """The venv's python, building the venv first if missing or stale."""
    python = ENV_DIR / "bin" / "python"
    stamp = ENV_DIR / "llava-kit-stamp"
    if stamp.is_file() and stamp.read_text() == _stamp() and python.is_file():
        return python
    shutil.rmtree(ENV_DIR, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(ENV_DIR)], check=True, timeout=300)
    _pip(python, "--require-hashes", "-r", str(PIN_FILE))
    _pip(python, *extra_requirements())
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "vlmevalkit_cpu_shim.py").write_text(SHIM)
    # addsitedir (not a bare path) so the kit venv's own .pth files (llava-kit's editable install) apply
    (site / "zz_llava_kit_env.pth").write_text(
        f"import site; site.addsitedir({_kit_site_packages()!r})\nimport vlmevalkit_cpu_shim\n")
    stamp.write_text(_stamp())
    return python
