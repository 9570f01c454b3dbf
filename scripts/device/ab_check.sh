#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/ (and optionally build/fp4lab-base, a binary of an earlier
# commit): every GPU test, then batch-1 and batch-32 decode of the Llama-8B and Nemotron presets with the
# base and the current binary in the same call (the lent cards differ by up to ~7% between calls), the batch
# sweeps of the current build as JSON, 8K-context Llama decode and the per-kernel step times under ncu.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
if [ "${GEMM:-1}" = 1 ]; then
  ./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m 1,8,32 --no-baselines >"$OUT/gemm.txt" 2>&1
  echo "== gemm"; cat "$OUT/gemm.txt" >>"$LOG"
  grep -E "^(llama|nemotron)" "$OUT/gemm.txt" | awk '{printf "  %-34s M=%-3s %-14s %8s us %6s read\n", $1" "$2, $5, $6, $7, $10}'
  rm -f "$OUT/gemm.txt"
fi
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  for q in nvfp4 bf16; do
    for bin in ./build/fp4lab-base ./build/fp4lab; do
      [ -x $bin ] || continue
      gen_decode $bin "$model $q b1 ${bin##*/}" --model preset:$model --quant $q --prompt-ids "$(prompt 128)" --max-new-tokens 256
      gen_decode $bin "$model $q b32 ${bin##*/}" --model preset:$model --quant $q "${B32[@]}" --batch 32 --max-new-tokens 64
    done
  done
done
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >>"$LOG" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$LOG" | tail -6
done
gen_decode ./build/fp4lab "llama8b nvfp4 8K ctx" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128
[ "${NCU:-1}" = 1 ] && SPECS="llama-3.1-8b:nvfp4 nemotron-nano-9b-v2:nvfp4" LMHEAD=0 bash "$(dirname "$0")/ncu_step.sh"
