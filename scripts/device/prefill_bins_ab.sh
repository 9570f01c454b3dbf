#!/usr/bin/env bash
# Run on a lent GPU with the current build and a base binary (BASE, default build/fp4lab-base): every GPU test,
# then prefill speed with both binaries, interleaved: `bench` batch 32 of 128-token prompts (16 new tokens,
# REPS rounds) and one 2048-token prompt, for MODELS (default both presets, BF16 and NVFP4 in each run);
# last, where a batched prefill goes with the current binary (`--profile`, one new token, so the op classes
# are the prefill's).
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
BASE=${BASE:-build/fp4lab-base}
T="$OUT/last.txt"
show() { grep -A3 "^quant" "$T" | grep -E "bf16|nvfp4"; cat "$T" >>"$LOG"; }
for m in ${MODELS:-nemotron-nano-9b-v2 llama-3.1-8b}; do
  for rep in $(seq 1 "${REPS:-2}"); do
    for bin in $BASE build/fp4lab; do
      ./$bin bench --model preset:$m --batch 32 --input-len 128 --output-len 16 --reps 2 --no-db >"$T" 2>>"$LOG"
      echo "== $m batch 32 ${bin##*/} rc=$?"; show
    done
  done
  for bin in $BASE build/fp4lab; do
    ./$bin bench --model preset:$m --batch 1 --input-len 2048 --output-len 8 --reps 3 --no-db >"$T" 2>>"$LOG"
    echo "== $m 2048-token prompt ${bin##*/} rc=$?"; show
  done
  ./build/fp4lab bench --model preset:$m --batch 32 --input-len 128 --output-len 1 --reps 1 --profile --no-db \
    >"$T" 2>>"$LOG"
  echo "== $m batch-32 prefill profile rc=$?"; grep -A14 "GPU time by op class" "$T"; cat "$T" >>"$LOG"
done
rm -f "$T"
