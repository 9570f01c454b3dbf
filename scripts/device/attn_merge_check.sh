#!/usr/bin/env bash
# Run on a lent GPU with a carried build/ and a base binary (BASE, e.g. build/fp4lab-base): every GPU test,
# then for both binaries the Llama-8B NVFP4 batch-1 decode step under ncu (warm caches, own clocks: the decode
# attention's time per step), Llama NVFP4 batch 1 with the attention splits forced (SPLITS, 1 4 6 8 12), and the
# same-call `generate` A/B of ab_bins.sh (REPS=2). compute-sanitizer (memcheck, racecheck) over the decode
# attention tests first.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
sanitize 'GpuKernels.*DecodeAttention*' memcheck racecheck
for bin in $BASE build/fp4lab; do
  echo "== ncu step, $bin"
  BIN=./$bin NCU_FLAGS="--cache-control none --clock-control none" SPECS="llama-3.1-8b:nvfp4" LMHEAD=0 \
    bash "$(dirname "$0")/ncu_step.sh" | grep -E "step GPU|attention|gemm"
done
for s in ${SPLITS:-1 4 6 8 12}; do
  for bin in $BASE build/fp4lab; do
    gen_decode ./$bin "llama nvfp4 b1 splits=$s ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256 --attn-splits $s
  done
done
BINS="$BASE build/fp4lab" REPS=${REPS:-2} bash "$(dirname "$0")/ab_bins.sh"
