#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: every GPU test, memcheck on the batched-decode kernels, a
# Nemotron batch sweep with the per-op profile, and the report merging it. Full logs go to $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -cE 'OK \]' "$OUT/gputests.log") ok"; grep -E "FAILED  \]" "$OUT/gputests.log" | head
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuEngine.BatchedDecode*:GpuEngine.PrefillThenDecode*' >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
./build/fp4lab bench --model preset:nemotron-nano-9b-v2 --reps 1 --sweep-batch ${SWEEP:-1,8,32} --profile --no-db \
  --json "$OUT/sweep-nemotron-h100.json" >"$OUT/sweep.txt" 2>"$OUT/sweep.err"
echo "sweep rc=$?"; grep -A6 "speedup vs batch" "$OUT/sweep.txt"
./build/fp4lab report "$OUT/sweep-nemotron-h100.json" --out "$OUT/report" | tail -1
