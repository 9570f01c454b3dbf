#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: every GPU test, compute-sanitizer memcheck of the
# GEMM and batched-decode tests, the GEMM benchmark on the model shapes (with the read-ceiling column), and the
# Nemotron and Llama preset batch sweeps with the per-op profile. Full logs and JSON under $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$OUT/gputests.log") ok"; grep -E "FAILED  \]" "$OUT/gputests.log" | head
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuNvfp4.RepackMatchesCpuTwin:GpuNvfp4.SplitKIsDeterministic:GpuNvfp4.W4A4*:GpuEngine.BatchedDecode*' \
  >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
if [ "${GEMM:-1}" = 1 ]; then
  ./build/fp4lab bench gemm --models nemotron-nano-9b-v2 llama-3.1-8b qwen3-8b \
    --json "$OUT/gemm-h200.json" >"$OUT/gemm-h200.txt" 2>"$OUT/gemm-h200.err"
  echo "bench gemm rc=$?"; head -1 "$OUT/gemm-h200.err"
  awk 'NF>=10 && ($5==1 || $5==16 || $5==64 || $5==1024)' "$OUT/gemm-h200.txt" | cut -c1-150 | head -60
fi
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch ${SWEEP:-1,8,32} --profile --no-db \
    --json "$OUT/sweep-$model.json" >"$OUT/sweep-$model.txt" 2>"$OUT/sweep-$model.err"
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$OUT/sweep-$model.txt"
done
