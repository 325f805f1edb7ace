#!/usr/bin/env bash
# Every GPU speed measurement of docs/performance.md in one go: seed vs fast, real-shape model
# (0.89B, random weights, synthetic stage-shaped data), stages 1, 1.5 and 2, one GPU.
# About 6-8 minutes on one H100, never more than 10: DeepSpeed's cpu_adam is built first (capped at
# 100 s) and each of the six runs is capped at 80 s.
#
#   benchmarks/gpu_bench.sh [OUT_DIR]        # default runs/bench; JSON per run + table.md
#
# Each GPU processes the seed's per-GPU step (keep_global_batch=false: 8x4, 1x16, 1x16 samples);
# the first of the STEPS steps is warm-up and not timed. The speed-up is asserted by
#   python -m pytest -m gpu tests/test_bench_runs.py
set -euo pipefail
out="${1:-runs/bench}"
steps="${BENCH_STEPS:-3}"
cap="${BENCH_RUN_TIMEOUT:-80}"   # seconds per run; 6 runs + the cpu_adam build stay under 10 minutes
py="${PYTHON:-python}"          # the module form needs no console script (PYTHONPATH installs)
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_bench.sh needs a CUDA GPU')"
mkdir -p "$out"
echo "== building DeepSpeed's cpu_adam (the seed's offloaded optimizer) once" >&2
timeout 100 "$py" -c "from deepspeed.ops.op_builder import CPUAdamBuilder; CPUAdamBuilder().load()" \
  > "$out/cpu_adam-build.log" 2>&1 || echo "   cpu_adam build failed or slow: see $out/cpu_adam-build.log" >&2
for stage in stage1 stage1_5 stage2; do
  for profile in seed fast; do
    echo "== $stage $profile" >&2
    if ! timeout "$cap" "$py" -m llava.cli bench "$stage" --size real --profile "$profile" --steps "$steps" \
         --set training.keep_global_batch=false --loader-seconds 1 --json --out "$out/$stage-$profile.json" \
         > /dev/null 2> "$out/$stage-$profile.log"; then
      echo "   failed or over ${cap}s: see $out/$stage-$profile.log" >&2
      rm -f "$out/$stage-$profile.json"
    fi
  done
done
"$py" -m llava.bench.report "$out"/*.json | tee "$out/table.md"
