#!/usr/bin/env bash
# Run on a lent GPU with a carried build/ and BASE (a base binary): the greedy decode step ending in the device
# argmax inside the captured graph (4 bytes to the host per token instead of the vocabulary's logits and a host
# argmax), and the host sampler without a full sort of the vocabulary. Every GPU test (unless TESTS=0);
# compute-sanitizer on the argmax kernel and the greedy graph step; medians of interleaved `generate` runs,
# BASE against build/fp4lab (ab_median.sh: CASES, REPS); then one sampled run per binary and format
# (temperature 0.8, top-p 0.9 and top-k 50: the host sampler's cost per token shows in decode tok/s).
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
sanitize 'GpuKernels.ArgmaxRowsMatchesCpu:GpuEngine.GreedyGraphStep*' memcheck racecheck
BINS="$BASE build/fp4lab" CASES="${CASES:-l1 n1 l32}" REPS=${REPS:-3} bash "$(dirname "$0")/ab_median.sh"
for bin in $BASE build/fp4lab; do
  for q in nvfp4 bf16; do
    $bin generate --backend cuda --model preset:llama-3.1-8b --quant $q --prompt-ids "$(prompt 128)" \
      --max-new-tokens 256 --temperature 0.8 --top-p 0.9 --top-k 50 >"$OUT/gen.out" 2>"$OUT/gen.err"
    echo "sampled llama $q ${bin##*/} rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1)"
    [ $q = nvfp4 ] && gen_decode $bin "greedy llama bf16 ${bin##*/}" --model preset:llama-3.1-8b --quant bf16 \
      --prompt-ids "$(prompt 128)" --max-new-tokens 256
  done
done
