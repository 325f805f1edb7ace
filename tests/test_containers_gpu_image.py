"""The GPU image users build (docker/Dockerfile, default cuda variant), built by CI and tested inside, on CPU.

.ci/run's docker step builds it (`.ci/docker-engine.sh` with LLAVA_KIT_DOCKER_GPU=1: the same Dockerfile
and target as `docker compose build`, only BASE_IMAGE pointed at a locally bootstrapped bookworm) and
sets LLAVA_KIT_GPU_IMAGE. Each test runs a container of it: torch's CUDA build and compiled archs against
llava/resources/torch_cuda.yaml, DeepSpeed's op report and the ops the profiles use (prebuilt, loadable,
every arch, portable CPUAdam), liger-kernel/triton and the varlen attention module, `llava-kit doctor`,
and the whole `llava-kit smoke` pipeline with the CPU image's accuracy bar (tests/test_core_smoke.py).
With CI=true a missing GPU image fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from llava.torch_builds import load_matrix

from container_run import docker_cli, image_under_test, run_in_image  # same tests folder

MATRIX = load_matrix()
VARIANT = MATRIX["variants"]["cuda"]
BUILD = MATRIX["torch"]["2.13.0"]["builds"][VARIANT["build"]]

pytestmark = [
    pytest.mark.docker,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("LLAVA_KIT_DOCKER_TESTS") != "1",
                       reason="docker step of .ci/run (LLAVA_KIT_DOCKER_GPU=1 builds the GPU image)"),
]


@pytest.fixture(scope="module")
def image() -> str:
    return image_under_test("LLAVA_KIT_GPU_IMAGE", "LLAVA_KIT_DOCKER_GPU", "GPU image")


def test_torch_is_the_cuda_13_build_with_every_arch_of_the_table(image):
    facts = json.loads(run_in_image(image, "python", "-c", (
        "import json, torch; from llava.torch_builds import compiled_archs; "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'archs': compiled_archs()}))")))
    print(f"\nGPU image: torch {facts['torch']} cuda {facts['cuda']} archs {' '.join(facts['archs'])}")
    assert facts["torch"] == f"2.13.0+{VARIANT['build']}" and facts["cuda"] == BUILD["cuda"]
    assert {f"sm_{arch.replace('.', '')}" for arch in BUILD["archs"]} <= set(facts["archs"])


def test_deepspeed_ops_are_prebuilt_loadable_for_every_arch_and_portable(image):
    report = run_in_image(image, "ds_report")
    print("\n" + report)
    ops = json.loads(run_in_image(image, "python", "-m", "llava.containers.deepspeed_ops", "--json"))
    by_name = {op["op"]: op for op in ops}
    assert sorted(by_name) == sorted(VARIANT["deepspeed_ops"])
    assert all(op["prebuilt"] and op["problems"] == [] for op in ops), ops
    assert set(VARIANT["arch_list"]) <= set(by_name["fused_adam"]["archs"])
    assert by_name["cpu_adam"]["avx512_instructions"] == 0
    assert all("/site-packages/deepspeed/ops/adam/" in op["file"] for op in ops)


def test_liger_triton_and_varlen_attention_import(image):
    out = run_in_image(image, "python", "-c", (
        "import liger_kernel.transformers, triton, llava.model.varlen_attention; "
        "from torch.nn.attention.varlen import varlen_attn; print('triton', triton.__version__)"))
    assert out.startswith("triton 3.")


def test_doctor_in_the_gpu_image(image):
    smoke = json.loads(run_in_image(image, "llava-kit", "doctor", "--stage", "smoke", "--json"))
    print("\n" + json.dumps(smoke["findings"], indent=1))
    assert smoke["runtime"] == "container" and smoke["blocking"] is False
    done = subprocess.run([docker_cli(), "run", "--rm", "--network", "none", image, "doctor", "--stage", "stage1", "--json"],
                          capture_output=True, text=True, timeout=300)
    stage1 = json.loads(done.stdout)
    assert done.returncode == 1 and stage1["blocking"]  # no GPU here: the GPU step is blocked, with its fix
    assert any(f["check"] == "gpus" and f["status"] == "block" and "llava-kit smoke" in (f["fix"] or "")
               for f in stage1["findings"])


def test_smoke_pipeline_in_the_gpu_image_reaches_the_cpu_images_bar(image):
    out = run_in_image(image, "bash", "-c", "llava-kit smoke --out /tmp/smoke > /tmp/smoke.log 2>&1 "
                   "|| { tail -50 /tmp/smoke.log; exit 1; }; cat /tmp/smoke/report.json", timeout=1500)
    report = json.loads(out)
    print(f"\nsmoke in the GPU image: circular accuracy {report['colour_accuracy']:.3f} on {report['questions']} "
          f"questions ({report['rows_right']}/{report['rows']} rotated rows), {report['seconds']} s")
    assert report["circular"] is True and report["questions"] >= 50 and report["rows"] == 4 * report["questions"]
    assert report["colour_accuracy"] >= 0.90 and report["rows_right"] >= 0.90 * report["rows"]


def test_image_size_is_reported(image):
    size = int(subprocess.run([docker_cli(), "image", "inspect", "-f", "{{.Size}}", image], capture_output=True,
                              text=True, check=True).stdout)
    print(f"\nGPU image {image}: {size / 1e9:.2f} GB")
    assert size < 20e9
