#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/: the batch-1 decode GEMV with 8 and 16 warps per block on
# the Llama-8B and Nemotron shapes (forced decode8), to place the 16-warp rule.
source "$(dirname "$0")/common.sh"
for w in 8 16; do
  ./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m 1,4 --no-baselines --variant decode8 \
    --decode-warps $w >"$OUT/gemm-w$w.txt" 2>&1
  echo "== decode8, $w warps"; grep -E "^(llama|nemotron)" "$OUT/gemm-w$w.txt" | awk '{printf "  %-34s M=%s %8s us %6s%% read\n", $1" "$2, $5, $7, $10}'
done
