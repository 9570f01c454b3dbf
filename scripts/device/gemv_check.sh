#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: the BF16 GEMV (kernel-notes #71). Every GPU test, `bench gemm` of
# both presets' shapes at M = 1, 2, 4 against cuBLAS (JSON under $OUT, with each K split), then `generate`
# with --bf16-gemv-rows 0 (cuBLAS) and the default, interleaved, REPS times (default 4), medians: Nemotron
# NVFP4 (its BF16 attention projections) and both presets in BF16, batch 1; Nemotron NVFP4 batch 2.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
for mdl in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench gemm --models $mdl --m 1,2,4 --json "$OUT/gemv-$mdl.json" 2>&1 | grep -E "^(shape|$mdl)" |
    awk '{printf "%-34s %6s %6s %3s bf16 %8s gemv %8s\n", $1" "$2, $3, $4, $5, $12, $13}'
done
R="$OUT/gemv_ab.txt"; : >"$R"
for rep in $(seq 1 ${REPS:-4}); do
  for rows in 0 2; do
    gen_decode ./build/fp4lab "n1-nvfp4 rows=$rows" --model preset:nemotron-nano-9b-v2 --quant nvfp4 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
    gen_decode ./build/fp4lab "n1-bf16 rows=$rows" --model preset:nemotron-nano-9b-v2 --quant bf16 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
    gen_decode ./build/fp4lab "l1-bf16 rows=$rows" --model preset:llama-3.1-8b --quant bf16 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --bf16-gemv-rows $rows
    gen_decode ./build/fp4lab "n2-nvfp4 rows=$rows" --model preset:nemotron-nano-9b-v2 --quant nvfp4 \
      --prompt-ids "$(prompt 128)" --prompt-ids "$(seq -s, 2 129)" --batch 2 --max-new-tokens 128 \
      --bf16-gemv-rows $rows
  done
done | tee -a "$R" >/dev/null
medians "$R"
grep -c "rc=0" "$R"
