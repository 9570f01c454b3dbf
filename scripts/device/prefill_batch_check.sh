#!/usr/bin/env bash
# Run on a lent GPU: every GPU test, then batch-32 `bench` runs of both models with the prompts prefilled one
# per forward (--prefill-tokens 0, the behaviour before batched prefill) and in one pass (the default), one
# --profile run of the batched form (where its prefill time goes), and a 2048-token prompt at batch 1.
# SWEEP=1 adds the batch sweeps. Few files come back (the device tool caps their count): the JSONs and the log.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
OUTLEN=${OUTLEN:-64}
T="$OUT/last.txt"
show() { grep -A3 "^Model" "$T"; grep -A3 "^quant" "$T"; cat "$T" >>"$LOG"; }
for m in llama-3.1-8b nemotron-nano-9b-v2; do
  for pt in 0 8192; do
    ./build/fp4lab bench --model preset:$m --batch 32 --input-len 128 --output-len $OUTLEN --reps 2 \
      --prefill-tokens $pt --no-db --json "$OUT/b32-$m-pt$pt.json" >"$T" 2>>"$LOG"
    echo "== $m batch 32, --prefill-tokens $pt (rc=$?)"; show
  done
  ./build/fp4lab bench --model preset:$m --batch 32 --input-len 128 --output-len 16 --reps 1 --profile \
    --no-db >"$T" 2>>"$LOG"
  echo "== $m profile rc=$?"; grep -A8 "GPU time by op class" "$T"; cat "$T" >>"$LOG"
  ./build/fp4lab bench --model preset:$m --batch 1 --input-len 2048 --output-len 16 --reps 3 --no-db \
    >"$T" 2>>"$LOG"
  echo "== $m 2048-token prompt, batch 1 rc=$?"; show
done
if [ "${SWEEP:-0}" = 1 ]; then
  for m in llama-3.1-8b nemotron-nano-9b-v2; do
    ./build/fp4lab bench --model preset:$m --reps 1 --sweep-batch 1,8,32 --no-db \
      --json "$OUT/sweep-$m.json" >"$T" 2>>"$LOG"
    echo "== sweep $m rc=$?"; grep -A6 "speedup vs batch" "$T"; cat "$T" >>"$LOG"
  done
fi
rm -f "$T"
