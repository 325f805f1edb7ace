"""Run a command in a fresh container of an image the docker step built (no network, CPU only).

Shared by the tests of the images users build (tests/test_containers_gpu_image.py,
tests/test_containers_eval_image.py); they find the engine through DOCKER_HOST, which
`.ci/docker-engine.sh --exec` sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def docker_cli() -> str:
    """Debian's docker CLI first: a newer one earlier on PATH may lack what the engine script uses."""
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")


def run_in_image(image: str, *command: str, mounts: tuple[str, ...] = (), env: tuple[str, ...] = (),
                 timeout: int = 600) -> str:
    """Run `command` (its first word as the entrypoint) and return its stdout; a failure quotes both streams.

    mounts are `host:container[:ro]` volumes, env extra `NAME=value` settings.
    """
    options = [option for mount in mounts for option in ("-v", mount)]
    options += [option for setting in ("OMP_NUM_THREADS=2", "HF_HUB_OFFLINE=1", *env) for option in ("-e", setting)]
    done = subprocess.run([docker_cli(), "run", "--rm", "--network", "none", "--shm-size", "1g", *options,
                           "--entrypoint", command[0], image, *command[1:]],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def image_under_test(variable: str, flag: str, what: str) -> str:
    """The tag the docker step exported in `variable`; skip without one, fail under CI=true (.ci/run sets `flag`)."""
    image = os.environ.get(variable)
    if image is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no {what} was built ({variable} unset: .ci/run sets {flag}=1)")
        pytest.skip(f"no {what} built ({flag}=1 .ci/docker-engine.sh --exec ...)")
    return image
