#!/usr/bin/env python3
"""Rebuild the GPU image's prebuilt DeepSpeed CPUAdam op for any x86-64-v3 CPU, not the build host's.

DeepSpeed's setup.py compiles CPUAdam with `-march=native` and the SIMD width of the CPU it runs on
(its op builder has no setting for either), so an image built on an AVX-512 machine dies with SIGILL
on a host without AVX-512, and the `seed` profile (ZeRO-3 + CPU offload) runs CPUAdam every step.
This script builds the same sources with `-march=x86-64-v3` (AVX2, FMA, F16C: every x86 server CPU
since Haswell / Zen 1) and DeepSpeed's AVX2 code path, under the module name DeepSpeed imports the
prebuilt op as, and puts it in place of setup.py's build. DeepSpeed's own builder and torch's
cpp_extension do the compiling; only the two flags are overridden (nothing in DeepSpeed offers that).

    python docker/portable_cpu_adam.py          # after `pip install deepspeed` with DS_BUILD_CPU_ADAM=1
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile

PORTABLE_ARCH = "-march=x86-64-v3"
PORTABLE_SIMD = "-D__AVX256__"


def main() -> int:
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    stock = get_accelerator().get_op_builder("CPUAdamBuilder")
    if not installed_ops.get(stock.NAME):
        print(f"DeepSpeed's setup.py did not prebuild {stock.NAME} (DS_BUILD_CPU_ADAM=1 missing, or it was "
              "skipped as incompatible)", file=sys.stderr)
        return 1
    target = importlib.util.find_spec(stock().absolute_name()).origin

    class PortableCPUAdam(stock):
        NAME = os.path.basename(target).split(".")[0]  # cpu_adam_op: the module name its init symbol carries

        def cpu_arch(self) -> str:
            return PORTABLE_ARCH

        def simd_width(self) -> str:
            return PORTABLE_SIMD

    with tempfile.TemporaryDirectory() as build_dir:
        os.environ["TORCH_EXTENSIONS_DIR"] = build_dir
        built = PortableCPUAdam().jit_load(verbose=False)
        shutil.copyfile(built.__file__, target)
    print(f"{stock.NAME}: rebuilt with {PORTABLE_ARCH} {PORTABLE_SIMD} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
