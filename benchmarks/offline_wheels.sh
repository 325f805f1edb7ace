#!/usr/bin/env bash
# For a GPU host without internet (an air-gapped cluster node): fill .whl/ with the wheels of
# benchmarks/offline-wheels.txt, the kit's pins that such a host's own CUDA Python (CPython 3.12, x86_64)
# may lack. Run in the repository root on a machine that reaches PyPI; copy the checkout with .whl/ to
# the GPU host and run benchmarks/airgapped_gpu_run.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pins=$(grep -v '^#' benchmarks/offline-wheels.txt | grep -v '^deepspeed==' | tr '\n' ' ')
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=" --platform $p"
done
# shellcheck disable=SC2086  # word splitting of the pin and platform lists is intended
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  $platforms -d .whl $pins
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w .whl \
  "$(grep '^deepspeed==' benchmarks/offline-wheels.txt)"
du -sh .whl
