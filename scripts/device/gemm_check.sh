#!/usr/bin/env bash
# Run on the lent GPU machine with a build carried from the dev machine (build/): GPU tests, memcheck, and the
# GEMM benchmark. Full logs go to $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu_before.csv"
./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4.*:CodecSweep.E4M3Decode*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$?"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |OK \]|FAILED  \]" "$OUT/gputests.log" | head -30
grep -B2 -A12 "Failure" "$OUT/gputests.log" | head -60
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuNvfp4.RepackMatchesCpuTwin:GpuNvfp4.SplitKIsDeterministic:GpuNvfp4.ActivationQuant*:GpuNvfp4.W4A4*' \
  >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
if [ "${BENCH:-1}" = 1 ]; then
  ./build/fp4lab bench gemm ${BENCH_ARGS:-} --json "$OUT/gemm.json" 2>"$OUT/bench.err" | tee "$OUT/gemm.txt"
  echo "bench rc=$?"; tail -3 "$OUT/bench.err"
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu_after.csv"
