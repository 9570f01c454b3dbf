#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/ and .shared/: every GPU test, then batch-1/8/32 sweeps of both
# presets and Nemotron's batch-1 profile (BF16 projections fused per input). Full output under $OUT.
source "$(dirname "$0")/common.sh"
LOG="$OUT/log.txt"
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$LOG" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$LOG") ok"; grep -E "FAILED  \]|Failure|teacher-forced|TP=2 vs" "$LOG" | head -14
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >"$OUT/sweep.txt" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$OUT/sweep.txt"
done
./build/fp4lab generate --backend cuda --greedy --model preset:nemotron-nano-9b-v2 --quant nvfp4 \
  --prompt-ids "$(seq -s, 1 128)" --max-new-tokens 128 --profile >/dev/null 2>"$OUT/gen.err"
grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -8
