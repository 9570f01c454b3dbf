#!/usr/bin/env bash
# Run on a lent GPU with several carried binaries (BINS, e.g. "build/fp4lab-base build/fp4lab"): the same
# `generate` runs with each, interleaved, in one call (the lent cards differ by up to ~7% between calls):
# Llama-8B and Nemotron NVFP4 at batch 1 and 32, Llama BF16 at batch 1, Llama NVFP4 at an 8K context.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee -a "$LOG"
for rep in $(seq 1 ${REPS:-1}); do
  for bin in $BINS; do gen_decode ./$bin "llama nvfp4 b1 ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256; done
  for bin in $BINS; do gen_decode ./$bin "nemotron nvfp4 b1 ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256; done
done
for bin in $BINS; do gen_decode ./$bin "llama bf16 b1 ${bin##*/}" --model preset:llama-3.1-8b --quant bf16 --prompt-ids "$(prompt 128)" --max-new-tokens 256; done
for bin in $BINS; do gen_decode ./$bin "llama nvfp4 b32 ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64; done
for bin in $BINS; do gen_decode ./$bin "nemotron nvfp4 b32 ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64; done
for bin in $BINS; do gen_decode ./$bin "llama nvfp4 8K ctx ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128; done
