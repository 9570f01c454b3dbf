#!/usr/bin/env bash
# Run on a lent GPU with a carried build/ (and build/fp4lab-base, a binary of an earlier commit): every GPU
# test, then the same-call A/B of `generate` (batch 1 and 32, Llama-8B and Nemotron presets, NVFP4 and BF16),
# Llama-8B NVFP4 batch 1 with 1 to 16 attention splits, an 8K-token context, and the per-kernel step under
# ncu with warm caches at the card's own clocks.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  for q in nvfp4 bf16; do
    for bin in ./build/fp4lab-base ./build/fp4lab; do
      [ -x $bin ] || continue
      gen_decode $bin "$model $q b1 ${bin##*/}" --model preset:$model --quant $q --prompt-ids "$(prompt 128)" --max-new-tokens 256
      [ "$q" = nvfp4 ] && gen_decode $bin "$model $q b32 ${bin##*/}" --model preset:$model --quant $q "${B32[@]}" --batch 32 --max-new-tokens 64
    done
  done
done
for s in ${SPLITS:-4 8 16}; do
  gen_decode ./build/fp4lab "llama nvfp4 b1 --attn-splits $s" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 --attn-splits $s
done
for bin in ./build/fp4lab-base ./build/fp4lab; do
  gen_decode $bin "llama nvfp4 8K ctx ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128
done
NCU_FLAGS="--cache-control none --clock-control none" SPECS="llama-3.1-8b:nvfp4 nemotron-nano-9b-v2:nvfp4" LMHEAD=0 \
  bash "$(dirname "$0")/ncu_step.sh"
