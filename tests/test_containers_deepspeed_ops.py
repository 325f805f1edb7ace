"""The GPU image's DeepSpeed op check on this CPU box: the AVX-512 scan on real compiled libraries, the
cubin listing through a cuobjdump stand-in serving cuobjdump's real `--list-elf` format. The whole check
runs inside the built image in tests/test_containers_gpu_image.py."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from llava.containers.deepspeed_ops import avx512_instructions, cubin_archs

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("objdump") is None,
                                reason="needs gcc and objdump (build-essential, as in the images)")

SOURCE = """
#include <immintrin.h>
void scale(float *x, int n) {
    for (int i = 0; i + 16 <= n; i += 16) {
#ifdef WIDE
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(2.0f)));
#else
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(2.0f)));
        _mm256_storeu_ps(x + i + 8, _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), _mm256_set1_ps(2.0f)));
#endif
    }
}
"""


def build(tmp_path, name, *flags):
    source = tmp_path / "scale.c"
    source.write_text(SOURCE)
    library = tmp_path / f"{name}.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", *flags, str(source), "-o", str(library)], check=True)
    return str(library)


def test_avx512_code_is_found_and_x86_64_v3_code_is_clean(tmp_path):
    assert avx512_instructions(build(tmp_path, "wide", "-march=x86-64-v4", "-DWIDE")) > 0
    assert avx512_instructions(build(tmp_path, "portable", "-march=x86-64-v3")) == 0


def test_cubin_archs_reads_cuobjdumps_listing(tmp_path, monkeypatch):
    tool = tmp_path / "cuobjdump"
    listing = "".join(f"ELF file    {i}: fused_adam_op.{i}.sm_{sm}.cubin\n"
                      for i, sm in enumerate(["80", "86", "89", "90", "100", "120"], 1))
    tool.write_text(f"#!{sys.executable}\nimport sys\nassert sys.argv[1] == '--list-elf'\nprint({listing!r}, end='')\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cubin_archs("/any/op.so") == ["8.0", "8.6", "8.9", "9.0", "10.0", "12.0"]
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    assert cubin_archs("/any/op.so") is None
