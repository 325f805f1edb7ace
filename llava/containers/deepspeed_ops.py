"""Whether a GPU image holds the DeepSpeed ops its profiles use, prebuilt, for every GPU and CPU it targets.

DeepSpeed's setup.py silently skips an op it was asked to build but cannot, and a missing op is then
JIT-compiled by every rank at its first step (minutes, and a compiler the host may lack). The image
build runs this module and fails on any finding; the docker tests run it inside the image again.
Per op: prebuilt (DeepSpeed's installed-ops table), loaded from the package without a JIT build, and
- a CUDA op: its embedded cubins (`cuobjdump --list-elf`) cover every arch of TORCH_CUDA_ARCH_LIST;
- a CPU op: no AVX-512 (zmm) instruction, so it runs on any x86-64-v3 host (docker/portable_cpu_adam.py).
Which ops: llava/resources/torch_cuda.yaml, per image variant (LLAVA_KIT_IMAGE_VARIANT).

    python -m llava.containers.deepspeed_ops [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llava.torch_builds import load_matrix

# The op name DeepSpeed's installed-ops table uses -> the builder class that loads it.
BUILDERS = {"cpu_adam": "CPUAdamBuilder", "fused_adam": "FusedAdamBuilder"}


def cubin_archs(library: str) -> list[str] | None:
    """The sm_XX targets of a CUDA extension's embedded cubins; None without cuobjdump."""
    tool = shutil.which("cuobjdump") or str(Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "bin" / "cuobjdump")
    if not os.access(tool, os.X_OK):
        return None
    listing = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True, check=True).stdout
    archs = sorted({int(m) for m in re.findall(r"\bsm_(\d+)", listing)})
    return [f"{arch // 10}.{arch % 10}" for arch in archs]


def avx512_instructions(library: str) -> int:
    """How many instructions of a shared library touch a zmm (AVX-512) register."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", library], capture_output=True, text=True,
                             check=True).stdout
    return sum(1 for line in listing.splitlines() if "%zmm" in line)


def op_report(name: str, arch_list: list[str]) -> dict:
    """Load one op the way DeepSpeed does at a training step, with JIT builds sent to an empty folder."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    report = {"op": name, "prebuilt": bool(installed_ops.get(name)), "problems": []}
    builder = get_accelerator().create_op_builder(BUILDERS[name])
    with tempfile.TemporaryDirectory() as jit_dir:
        os.environ["TORCH_EXTENSIONS_DIR"] = jit_dir
        try:
            module = builder.load(verbose=False)
        except Exception as err:  # noqa: BLE001 - any failure to load is the finding itself
            report["problems"].append(f"does not load: {type(err).__name__}: {err}")
            return report
        jit_built = any(Path(jit_dir).iterdir())
    report["file"] = module.__file__
    if not report["prebuilt"] or jit_built:
        report["problems"].append("not prebuilt: DeepSpeed would JIT-compile it at the first step")
    if BUILDERS[name] == "CPUAdamBuilder":
        report["avx512_instructions"] = avx512_instructions(module.__file__)
        if report["avx512_instructions"]:
            report["problems"].append(f"{report['avx512_instructions']} AVX-512 instructions: SIGILL on hosts "
                                      "without AVX-512 (built for the build host's CPU)")
        return report
    report["archs"] = cubin_archs(module.__file__)
    if report["archs"] is None:
        report["problems"].append("cuobjdump not found: cannot list the compiled archs")
    else:
        missing = [arch for arch in arch_list if arch not in report["archs"]]
        if missing:
            report["problems"].append(f"no cubin for arch {', '.join(missing)} of TORCH_CUDA_ARCH_LIST")
    return report


def check_image(variant: str | None = None) -> list[dict]:
    variant = variant or os.environ.get("LLAVA_KIT_IMAGE_VARIANT", "cuda")
    spec = load_matrix()["variants"][variant]
    return [op_report(name, spec["arch_list"]) for name in spec["deepspeed_ops"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", help="image variant (default: $LLAVA_KIT_IMAGE_VARIANT)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reports = check_image(args.variant)
    if args.json:
        print(json.dumps(reports, indent=2))
    for report in reports:
        detail = f"archs {' '.join(report['archs'])}" if report.get("archs") else \
            f"avx512 instructions {report.get('avx512_instructions', '?')}"
        state = "OK" if not report["problems"] else "FAIL: " + "; ".join(report["problems"])
        print(f"deepspeed op {report['op']}: prebuilt={report['prebuilt']} {detail} {report.get('file', '')} {state}",
              file=sys.stderr if args.json else sys.stdout)
    return 1 if any(report["problems"] for report in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
