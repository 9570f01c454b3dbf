#!/usr/bin/env bash
# Run on a lent GPU with the current build and a base binary (BASE, default build/fp4lab-prev): the GEMM tests,
# `bench gemm` at prefill-sized M (heuristic kernels, both binaries), and `generate` prefill speed of 128- and
# 200-token prompts for the Llama-8B and Nemotron presets in NVFP4 with both binaries (and BF16 for reference).
source "$(dirname "$0")/common.sh"
BASE=${BASE:-build/fp4lab-prev}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
if [ -x build/tests/fp4lab_tests ]; then
  ./build/tests/fp4lab_tests --gtest_filter="${FILTER:-GpuNvfp4.*:GpuEngine.*:GpuKernels.Swiglu*}" >>"$LOG" 2>&1
  echo "tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]" "$LOG" | head -8
fi
for bin in $BASE build/fp4lab; do
  ./$bin bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m ${MS:-96,128,192} --no-baselines 2>>"$LOG" |
    grep -E "^(llama|nemotron)" | awk -v b="${bin##*/}" '{printf "%-12s %-34s M=%-4s %-16s %8s us\n", b, $1" "$2, $5, $6, $7}'
done | sort -k2,3 -k4,4 -s
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  for len in 128 200; do
    for bin in $BASE build/fp4lab; do
      ./$bin generate --backend cuda --greedy --model preset:$model --quant nvfp4 --prompt-ids "$(prompt $len)" \
        --max-new-tokens 4 >/dev/null 2>"$OUT/gen.err"
      echo "$model nvfp4 $len ${bin##*/}: $(grep -o 'prefill: [^;]*' "$OUT/gen.err")"
    done
    ./build/fp4lab generate --backend cuda --greedy --model preset:$model --quant bf16 --prompt-ids "$(prompt $len)" \
      --max-new-tokens 4 >/dev/null 2>"$OUT/gen.err"
    echo "$model bf16 $len: $(grep -o 'prefill: [^;]*' "$OUT/gen.err")"
  done
done
