#!/usr/bin/env bash
# Run on a lent GPU: the two-kernel Mamba decode step against the four separate kernels, in the same binary
# and call (`--no-fused-mamba`), interleaved: the GPU tests, compute-sanitizer on the step's kernel test, then
# Nemotron `generate` at batch 1 (NVFP4 twice, BF16), 8 and 32 with the greedy ids compared, then (NCU=1) the
# NVFP4 batch-1 step under ncu both ways.
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
sanitize 'GpuKernels.MambaDecodeStep*' memcheck synccheck
B8=(); for i in $(seq 1 8); do B8+=(--prompt-ids "$(seq -s, $i $((i + 127)))"); done
M=preset:nemotron-nano-9b-v2
run() {  # label, args...
  local label=$1; shift
  for mode in "" --no-fused-mamba; do
    gen_decode ./build/fp4lab "$label ${mode:-fused}" --model $M "$@" $mode
    echo "   ids $(md5sum <"$OUT/gen.out" | cut -c1-8)"
  done
}
for rep in $(seq 1 ${REPS:-2}); do
  run "nvfp4 b1" --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256
done
run "bf16 b1" --quant bf16 --prompt-ids "$(prompt 128)" --max-new-tokens 256
run "nvfp4 b8" --quant nvfp4 "${B8[@]}" --batch 8 --max-new-tokens 64
run "bf16 b8" --quant bf16 "${B8[@]}" --batch 8 --max-new-tokens 64
run "nvfp4 b32" --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64
run "bf16 b32" --quant bf16 "${B32[@]}" --batch 32 --max-new-tokens 64
[ "${NCU:-1}" = 1 ] || exit 0
for mode in "" --no-fused-mamba; do
  NCU_FLAGS="--cache-control none --clock-control none" SPECS="nemotron-nano-9b-v2:nvfp4" LMHEAD=0 GEN_ARGS="$mode" \
    bash "$(dirname "$0")/ncu_step.sh" 2>&1 | head -14
done
