#!/usr/bin/env bash
# Run on a lent GPU with a base binary (BASE, e.g. build/fp4lab-base): the engine GPU tests, then Nemotron
# NVFP4 and BF16 batched decode (batch 8 and 32, 64 new tokens) with each binary, interleaved REPS times, and
# the batch-1 case once (the batched Mamba ops reading the in_proj output in place, kernel-notes #47).
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
./build/tests/fp4lab_tests --gtest_filter='GpuEngine.*:GpuKernels.*' >>"$LOG" 2>&1
echo "engine/kernel gpu tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]" "$LOG" | head
for rep in $(seq 1 ${REPS:-2}); do
  for q in nvfp4 bf16; do
    for bin in $BASE build/fp4lab; do
      gen_decode ./$bin "nemotron $q b8 ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant $q "${B32[@]:0:16}" --batch 8 --max-new-tokens 64
      gen_decode ./$bin "nemotron $q b32 ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant $q "${B32[@]}" --batch 32 --max-new-tokens 64
    done
  done
done
for bin in $BASE build/fp4lab; do gen_decode ./$bin "nemotron nvfp4 b1 ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256; done
