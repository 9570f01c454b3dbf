#!/usr/bin/env bash
# Run on a lent GPU with a carried build/ and BASE (a base binary): the greedy decode step ending in the device
# argmax inside the captured graph (4 bytes to the host per token instead of the vocabulary's logits and a host
# argmax), sampling without top-k / top-p drawn there too (Gumbel-max), and the host sampler (top-k / top-p)
# without a full sort of the vocabulary. Every GPU test (unless TESTS=0);
# compute-sanitizer on the argmax kernel and the greedy graph step; medians of interleaved `generate` runs,
# BASE against build/fp4lab (ab_median.sh: CASES, REPS); then sampled runs per binary and format (temperature
# 0.8 with top-p 0.9 and top-k 50, and temperature 0.8 alone).
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
sanitize 'GpuKernels.ArgmaxRowsMatchesCpu:GpuEngine.GreedyGraphStep*' memcheck racecheck
BINS="$BASE build/fp4lab" CASES="${CASES:-l1 n1 l32}" REPS=${REPS:-3} bash "$(dirname "$0")/ab_median.sh"
# Sampled: top-p / top-k on the host, and temperature alone, drawn on the device (Gumbel-max).
sampled() {
  local bin=$1 label=$2; shift 2
  $bin generate --backend cuda --prompt-ids "$(prompt 128)" --max-new-tokens 256 "$@" >"$OUT/gen.out" 2>"$OUT/gen.err"
  echo "$label ${bin##*/} rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1)"
}
for bin in $BASE build/fp4lab; do
  for q in nvfp4 bf16; do
    sampled $bin "top-p/top-k llama $q" --model preset:llama-3.1-8b --quant $q --temperature 0.8 --top-p 0.9 --top-k 50
    sampled $bin "temperature llama $q" --model preset:llama-3.1-8b --quant $q --temperature 0.8
  done
  sampled $bin "temperature nemotron nvfp4" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --temperature 0.8
  gen_decode $bin "greedy llama bf16 ${bin##*/}" --model preset:llama-3.1-8b --quant bf16 --prompt-ids "$(prompt 128)" \
    --max-new-tokens 256
done
