#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/: every GPU test (among them the PDL on/off
# bit-identity test), then batch-1 and batch-32 decode of the Llama-8B and Nemotron presets with programmatic
# dependent launch on and off (--no-pdl), and the decode GEMV alone both ways. Full logs under $OUT.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
gen() {  # label, then generate arguments
  local label=$1; shift
  ./build/fp4lab generate --backend cuda --greedy "$@" >"$OUT/gen.out" 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1) ids=$(head -c 60 "$OUT/gen.out" | md5sum | cut -c1-8)"
  cat "$OUT/gen.err" >>"$LOG"
}
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  for q in nvfp4 bf16; do
    for pdl in "" --no-pdl; do
      gen "$model $q b1 ${pdl:-pdl}" --model preset:$model --quant $q --prompt-ids "$(prompt 128)" --max-new-tokens 256 $pdl
    done
  done
  for pdl in "" --no-pdl; do
    gen "$model nvfp4 b32 ${pdl:-pdl}" --model preset:$model --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 $pdl
  done
done
for pdl in "" --no-pdl; do
  ./build/fp4lab bench gemm --models llama-3.1-8b --m 1 --no-baselines $pdl >"$OUT/gemm.txt" 2>&1
  echo "gemm m=1 ${pdl:-pdl}"; grep -E "^ *[0-9]+ x" "$OUT/gemm.txt" | head -6; cat "$OUT/gemm.txt" >>"$LOG"
done
