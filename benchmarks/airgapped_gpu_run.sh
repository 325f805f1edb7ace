#!/usr/bin/env bash
# The GPU checks and measurements, in one command, on a GPU host without internet that has its own CUDA
# torch (an air-gapped cluster node), from a checkout carrying .whl/ (benchmarks/offline_wheels.sh):
#   1. the carried wheels go to /tmp/site, ahead of the host's packages;
#   2. the GPU-only correctness test of PyTorch's varlen kernel against SDPA (bf16, GQA, backward);
#   3. benchmarks/gpu_bench.sh: seed vs fast, real size, three stages, and its table.
# The per-run files are packed into one archive beside table.md, so a few files carry the results out.
#
#   bash benchmarks/airgapped_gpu_run.sh OUT_DIR     (about 10 minutes on one H100)
set -uo pipefail
out="${1:?usage: airgapped_gpu_run.sh OUT_DIR}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PYTHON=python3 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv"
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" | tee "$out/versions.txt"
# tests/test_reliability_gpu.py (kill/resume on CUDA, 11 GB state save) ran on an H100 on 2026-11-26;
# add it here when the training loop changes.
timeout "${GPU_TESTS_TIMEOUT:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_bench_forward.py > "$out/gpu-tests.log" 2>&1
echo "gpu tests: exit $?" | tee -a "$out/versions.txt"
BENCH_RUN_TIMEOUT="${BENCH_RUN_TIMEOUT:-70}" bash benchmarks/gpu_bench.sh "$out/bench"
cp "$out/bench/table.md" "$out/table.md" 2>/dev/null
tar -czf "$out/bench.tgz" -C "$out" bench && rm -rf "$out/bench"
