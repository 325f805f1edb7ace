"""The eval image users build (docker/eval.Dockerfile, `docker compose build`), built by CI and tested inside.

.ci/run's docker step builds it (`.ci/docker-engine.sh` with LLAVA_KIT_DOCKER_EVAL=1: the same Dockerfile
as compose's eval service, only BASE_IMAGE pointed at a locally bootstrapped bookworm) and sets
LLAVA_KIT_EVAL_IMAGE. In containers of it, on CPU: the runtime the kit probes (the pinned VLMEvalKit
artifact, torch's CUDA 13.0 build and its torchvision from llava/resources/torch_cuda.yaml), the kit's
refusal of `--backend vlmevalkit` without a GPU, and VLMEvalKit's own run.py on a smoke checkpoint
through the kit's launcher, under the CPU harness of tests/vlmevalkit_cpu_run.py (it only moves
LLaVA_OneVision_HF's CUDA/float16 choices to CPU/float32): its acc.csv must equal, byte for byte, the
builtin backend's on the same rows (the host-venv version of this is tests/test_eval_vlmevalkit_real.py).
With CI=true a missing eval image fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llava.evaluate.suite import load_suite
from llava.evaluate.vlmevalkit import PROBE, command_line, config_document, find_output
from llava.pipeline import SMOKE_SUITE, run_smoke
from llava.synthetic.world import WorldSize, held_out_tsv
from llava.torch_builds import load_matrix

from container_run import docker_cli, image_under_test, run_in_image  # same tests folder

MATRIX = load_matrix()
VARIANT = MATRIX["variants"]["cuda"]
BUILD = MATRIX["torch"]["2.13.0"]["builds"][VARIANT["build"]]
HARNESS = Path(__file__).resolve().parent / "vlmevalkit_cpu_run.py"
QUESTIONS = 12

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("LLAVA_KIT_DOCKER_TESTS") != "1",
                       reason="docker step of .ci/run (LLAVA_KIT_DOCKER_EVAL=1 builds the eval image)"),
]


@pytest.fixture(scope="module")
def image() -> str:
    return image_under_test("LLAVA_KIT_EVAL_IMAGE", "LLAVA_KIT_DOCKER_EVAL", "eval image")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """`llava-kit smoke` on the host with a small test set: a stage-2 checkpoint and its builtin eval."""
    out = tmp_path_factory.mktemp("eval-image-smoke")
    run_smoke(out, world_size=WorldSize(test_questions=QUESTIONS))
    subprocess.run(["chmod", "-R", "a+rX", str(out)], check=True)  # the image runs as uid 1000
    return out


def _writable_by_the_image_user(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    return folder


def test_the_runtime_is_the_pinned_vlmevalkit_on_the_cuda_13_torch(image):
    probed = json.loads(run_in_image(image, "python", "-c", PROBE, "ms-vlmeval").strip().splitlines()[-1])
    facts = json.loads(run_in_image(image, "python", "-c", (
        "import json, torch, torchvision; print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
        "'torchvision': torchvision.__version__}))")))
    print(f"\neval image: VLMEvalKit {probed['package']}, torch {facts['torch']} cuda {facts['cuda']} "
          f"torchvision {facts['torchvision']}")
    # the kit's probe reads distribution versions: PyPI's CUDA 13.0 wheel carries no local "+cu130" there
    assert probed == {"package": load_suite(SMOKE_SUITE).vlmevalkit.package.split("==")[1], "torchvision": True,
                      "torch": "2.13.0", "cuda": False}
    assert facts["torch"] == f"2.13.0+{VARIANT['build']}" and facts["cuda"] == BUILD["cuda"]
    assert facts["torchvision"].split("+")[0] == MATRIX["torch"]["2.13.0"]["torchvision"]


def test_the_kit_refuses_vlmevalkit_without_a_gpu_and_says_why(image, smoke):
    tsv = Path("/smoke") / held_out_tsv(smoke).relative_to(smoke)
    done = subprocess.run([docker_cli(), "run", "--rm", "--network", "none", "-v", f"{smoke}:/smoke:ro", image,
                           "eval", "/smoke/checkpoints/stage2", "--suite", "eval/shapes_smoke.yaml", "--tsv", str(tsv),
                           "--backend", "vlmevalkit", "--out", "/tmp/eval"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no CUDA device" in done.stderr and "--backend builtin" in done.stderr and "Traceback" not in done.stderr


def test_run_py_in_the_eval_image_gives_the_builtin_backends_table(image, smoke, tmp_path):
    suite = load_suite(SMOKE_SUITE)
    work = _writable_by_the_image_user(tmp_path / "out")
    (work / "config.json").write_text(json.dumps(config_document(suite, Path("/smoke/checkpoints/stage2"))))
    lmudata = _writable_by_the_image_user(work / "LMUData")
    shutil.copy(held_out_tsv(smoke), lmudata / f"{suite.dataset}.tsv")
    harness = Path("/harness") / HARNESS.name
    args = command_line(Path("/out/config.json"), Path("/out/work"), suite.judge, "python")[3:]
    run_in_image(image, "python", str(harness), "/out/record.pt", *args,
                 mounts=(f"{smoke}:/smoke:ro", f"{HARNESS}:{harness}:ro", f"{work}:/out"),
                 env=("LMUData=/out/LMUData", "LITELLM_LOCAL_MODEL_COST_MAP=True"), timeout=1200)
    acc = find_output(work / "work", suite, ("_acc.csv", "_exact_matching_acc.csv"))
    assert acc is not None, sorted(str(p.relative_to(work)) for p in work.rglob("*"))
    print(f"\nVLMEvalKit run.py in the eval image: {acc.read_text().strip()}")
    assert acc.read_bytes() == (smoke / "eval" / "acc.csv").read_bytes()
