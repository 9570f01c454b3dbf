#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/: the GEMM GPU tests, then decode64 (the decode kernel with
# eight token tiles) against the heuristic's mma.sync tiles at M = 33..64 on the model shapes.
source "$(dirname "$0")/common.sh"
./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4*:GpuKernels.Grouped*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$OUT/gputests.log") ok"; grep -E "FAILED  \]" "$OUT/gputests.log" | head
G="./build/fp4lab bench gemm --models nemotron-nano-9b-v2,llama-3.1-8b --m 33,48,64 --reps ${REPS:-10}"
$G >"$OUT/gemm-heuristic.txt" 2>&1; echo "heuristic rc=$?"
$G --variant decode64 --rows-per-block 16 --no-baselines >"$OUT/gemm-decode64.txt" 2>&1; echo "d64 rc=$?"
for f in heuristic decode64; do
  echo "== $f"; awk 'NF >= 8 && ($5 == 33 || $5 == 64)' "$OUT/gemm-$f.txt" | cut -c1-125 | head -20
done
