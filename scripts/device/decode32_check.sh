#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: every GPU test, then the decode kernel with
# four token tiles (decode32) against the 32-token mma.sync tile at M = 17..32 on the model shapes, then the
# batch sweeps of both presets. Full output under $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$OUT/gputests.log") ok"; grep -E "FAILED  \]" "$OUT/gputests.log" | head
G="./build/fp4lab bench gemm --models nemotron-nano-9b-v2,llama-3.1-8b --m 17,24,32 --reps ${REPS:-10}"
$G >"$OUT/gemm-heuristic.txt" 2>&1; echo "heuristic rc=$?"
$G --variant decode32 --rows-per-block 16 --no-baselines >"$OUT/gemm-decode32-r16.txt" 2>&1; echo "d32 r16 rc=$?"
$G --variant mma32 --no-baselines >"$OUT/gemm-mma32.txt" 2>&1; echo "mma32 rc=$?"
for f in heuristic decode32-r16 mma32; do
  echo "== $f"; awk 'NF >= 8 && ($5 == 17 || $5 == 32)' "$OUT/gemm-$f.txt" | cut -c1-140 | head -20
done
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >"$OUT/sweep.txt" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$OUT/sweep.txt"
done
