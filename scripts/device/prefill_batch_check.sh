#!/usr/bin/env bash
# Run on a lent GPU: every GPU test, then batch-32 `bench` runs of both models with the prompts prefilled one
# per forward (--prefill-tokens 0, the behaviour before batched prefill) and in one pass (the default), and
# one --profile run of the batched form (where its prefill time goes). SWEEP=1 adds the batch sweeps.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
OUTLEN=${OUTLEN:-64}
for m in llama-3.1-8b nemotron-nano-9b-v2; do
  for pt in 0 8192; do
    ./build/fp4lab bench --model preset:$m --batch 32 --input-len 128 --output-len $OUTLEN --reps 2 \
      --prefill-tokens $pt --no-db --json "$OUT/b32-$m-pt$pt.json" >"$OUT/b32-$m-pt$pt.txt" 2>>"$LOG"
    echo "== $m batch 32, --prefill-tokens $pt (rc=$?)"
    grep -A3 "^Model" "$OUT/b32-$m-pt$pt.txt"; grep -A3 "^quant" "$OUT/b32-$m-pt$pt.txt"
  done
  ./build/fp4lab bench --model preset:$m --batch 32 --input-len 128 --output-len 16 --reps 1 --profile \
    --no-db --json "$OUT/prof-$m.json" >"$OUT/prof-$m.txt" 2>>"$LOG"
  echo "== $m profile rc=$?"; grep -A12 "GPU time by op class" "$OUT/prof-$m.txt"; grep -A3 "^quant" "$OUT/prof-$m.txt"
done
if [ "${SWEEP:-0}" = 1 ]; then
  for m in llama-3.1-8b nemotron-nano-9b-v2; do
    ./build/fp4lab bench --model preset:$m --reps 1 --sweep-batch 1,8,32 --no-db \
      --json "$OUT/sweep-$m.json" >"$OUT/sweep-$m.txt" 2>>"$LOG"
    echo "== sweep $m rc=$?"; grep -A6 "speedup vs batch" "$OUT/sweep-$m.txt"
  done
fi
