"""README's bare path (AutoDL and other hosts without Docker), run literally in a fresh venv.

The install lines are read from README's "Bare path" block and run as written, in one bash script:
only /root/autodl-tmp and /tmp/ are moved under the test's temp folder, and AutoDL's proxy line and the
steps that need the Hub or GPUs (`prepare`, `train` on real models) are left out. They install the GPU
lock (torch 2.13.0's CUDA 13.0 build from PyPI and the nvidia-* libraries, hash-checked, about 4 GB;
pip's own cache makes a second run download nothing), DeepSpeed and llava-kit. Then the venv's
`llava-kit --help` runs, and the smoke's first stage on CPU: the shapes world built into README's
LLAVA_KIT_HOME and `llava-kit train stages/smoke/stage1.yaml` on it, which must write its checkpoint
with a finite loss (the whole smoke pipeline's accuracy is asserted on the GPU image in
tests/test_containers_gpu_image.py, with the same torch). This machine's pip configuration (local mirrors, a CPU torch in
find-links) is kept out of it, as a rented GPU host has none.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = ("source /etc/network_turbo", "llava-kit prepare", "llava-kit train")

pytestmark = [pytest.mark.extended, pytest.mark.timeout(3600)]


def readme_bare_path_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Bare path.*?```bash\n(.*?)```", text, re.S)[1]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return [line for line in commands if not any(skipped in line for skipped in SKIPPED)]


def test_readme_bare_path_block_is_what_the_walk_runs():
    lines = readme_bare_path_lines()
    assert lines[0].startswith("export LLAVA_KIT_HOME=") and any("python3.11 -m venv" in line for line in lines)
    assert any("--require-hashes -r /tmp/base.lock" in line for line in lines)
    assert lines[-1].startswith("pip install --no-deps -e .")


def test_readme_bare_path_installs_and_trains_the_first_smoke_stage(tmp_path):
    # /tmp/ first: tmp_path itself usually lies under /tmp/
    script = "\n".join(line.replace("/tmp/", f"{tmp_path}/").replace("/root/autodl-tmp", str(tmp_path))
                       for line in readme_bare_path_lines())
    venv = tmp_path / "venv" / "bin"
    home = tmp_path / "llava-kit-data"  # README's LLAVA_KIT_HOME, moved
    checks = f"""
{venv}/python -c "import torch; print('bare path torch', torch.__version__, 'cuda', torch.version.cuda)"
{venv}/llava-kit --help > /dev/null
{venv}/python -c "from llava.synthetic.world import WorldSize, build_world; build_world('{home}', size=WorldSize.circular())"
HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 {venv}/llava-kit train stages/smoke/stage1.yaml
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PATH": f"/usr/local/bin:/usr/bin:/bin:{env.get('PATH', '')}"}
    log = tmp_path / "walk.log"
    with log.open("w") as sink:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script + checks], cwd=ROOT, env=env,
                              stdout=sink, stderr=subprocess.STDOUT, timeout=3500)
    text = log.read_text()
    print(text[-3000:])
    assert done.returncode == 0, text[-5000:]
    assert "bare path torch 2.13.0+cu130 cuda 13.0" in text  # PyPI's torch names its CUDA 13.0 build
    manifest = json.loads((home / "checkpoints" / "stage1" / "manifest.json").read_text())
    assert manifest["kind"] == "checkpoint"
    assert "stage1 finished at step" in text
