#!/usr/bin/env bash
# Run on a lent GPU: decode attention doing RoPE and the KV-cache append itself against the separate kernel
# before it (`--no-fused-rope`), same binary and call, interleaved: the GPU tests, compute-sanitizer on the
# kernel test, then `generate` for Llama-8B (NVFP4 twice, BF16, batch 32, 8K context) and Nemotron, with the
# greedy ids compared, then (NCU=1) the Llama NVFP4 batch-1 step under ncu both ways.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
sanitize 'GpuKernels.DecodeAttentionRotates*' memcheck racecheck
run() {  # label, args...
  local label=$1; shift
  for mode in "" --no-fused-rope; do
    gen_decode ./build/fp4lab "$label ${mode:-fused}" "$@" $mode
    echo "   ids $(md5sum <"$OUT/gen.out" | cut -c1-8)"
  done
}
L=preset:llama-3.1-8b
for rep in $(seq 1 ${REPS:-2}); do
  run "llama nvfp4 b1" --model $L --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256
done
run "llama bf16 b1" --model $L --quant bf16 --prompt-ids "$(prompt 128)" --max-new-tokens 256
run "llama nvfp4 b32" --model $L --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64
run "llama nvfp4 8K ctx" --model $L --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128
run "nemotron nvfp4 b1" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256
[ "${NCU:-1}" = 1 ] || exit 0
for mode in "" --no-fused-rope; do
  NCU_FLAGS="--cache-control none --clock-control none" SPECS="llama-3.1-8b:nvfp4" LMHEAD=0 GEN_ARGS="$mode" \
    bash "$(dirname "$0")/ncu_step.sh" 2>&1 | head -12
done
