#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: every GPU test; with BASE set (a base binary, e.g.
# build/fp4lab-base), the same-call `generate` A/B of ab_bins.sh against it; the batch sweeps of both presets
# as JSON (NVFP4 vs BF16 at batch 1, 8, 32); and (unless NCU=0) the per-kernel step under ncu with warm caches
# at the card's own clocks.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
[ -n "${BASE:-}" ] && BINS="$BASE build/fp4lab" REPS=2 bash "$(dirname "$0")/ab_bins.sh"
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >>"$LOG" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$LOG" | tail -6
done
[ "${NCU:-1}" = 1 ] || exit 0
NCU_FLAGS="--cache-control none --clock-control none" SPECS="llama-3.1-8b:nvfp4 nemotron-nano-9b-v2:nvfp4" LMHEAD=0 \
  bash "$(dirname "$0")/ncu_step.sh"
