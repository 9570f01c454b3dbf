#!/usr/bin/env bash
# Run on a lent GPU with a carried build: Llama-8B NVFP4 decode with the attention split count forced
# (--attn-splits) against the automatic rule, at batch 1 (128-token prompt, 256 new tokens; 8K context) and 32.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee -a "$LOG"
for rep in 1 2; do
  for s in ${SPLITS:-0 1 2 4 8 16 32}; do
    gen_decode ./build/fp4lab "b1 splits=$s" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 --attn-splits $s
  done
done
for s in ${SPLITS:-0 1 2 4 8 16 32}; do
  gen_decode ./build/fp4lab "8K splits=$s" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128 --attn-splits $s
  gen_decode ./build/fp4lab "b32 splits=$s" --model preset:llama-3.1-8b --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 --attn-splits $s
done
