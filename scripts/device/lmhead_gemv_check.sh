#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: the BF16 GEMV as the lm_head at batch 1 (FP32 logits). Every GPU
# test, `bench gemm` of the two vocabularies' shapes against cuBLAS, then `generate` with --bf16-gemv-rows 0
# (cuBLAS) and the default, interleaved, REPS times (default 4), medians: Llama-8B NVFP4 (whose only BF16
# layer is the lm_head), Nemotron NVFP4 and Llama BF16, batch 1.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
./build/fp4lab bench gemm --models "" --shape 128256x4096 --shape 131072x4480 --m 1 2>&1 | grep -E "^custom" |
  awk '{printf "%-20s M=%s cublas %8s gemv %8s\n", $2, $5, $12, $13}'
R="$OUT/lmhead_ab.txt"; : >"$R"
for rep in $(seq 1 ${REPS:-4}); do
  for rows in 0 2; do
    gen_decode ./build/fp4lab "l1-nvfp4 rows=$rows" --model preset:llama-3.1-8b --quant nvfp4 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
    gen_decode ./build/fp4lab "n1-nvfp4 rows=$rows" --model preset:nemotron-nano-9b-v2 --quant nvfp4 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
    gen_decode ./build/fp4lab "l1-bf16 rows=$rows" --model preset:llama-3.1-8b --quant bf16 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
  done
done | tee -a "$R" >/dev/null
medians "$R"
