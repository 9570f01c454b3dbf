#!/usr/bin/env bash
# Run on a lent GPU with several carried binaries (BINS): the same `generate` runs, each binary in turn, REPS
# times (default 6), then the median decode tok/s per case and binary. For changes smaller than the lent
# card's spread between single runs (2-5%). CASES: a subset of "l1 n1 l32 n32" (Llama-8B / Nemotron NVFP4 at
# batch 1 and 32).
source "$(dirname "$0")/common.sh"
R="$OUT/ab_median.txt"; : >"$R"
for rep in $(seq 1 ${REPS:-6}); do
  for c in ${CASES:-l1 n1 l32 n32}; do
    for bin in $BINS; do
      case $c in
        l1) gen_decode ./$bin "$c ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 ;;
        n1) gen_decode ./$bin "$c ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 ;;
        l32) gen_decode ./$bin "$c ${bin##*/}" --model preset:llama-3.1-8b --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 ;;
        n32) gen_decode ./$bin "$c ${bin##*/}" --model preset:nemotron-nano-9b-v2 --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 ;;
      esac
    done
  done
done | tee -a "$R" >/dev/null
medians "$R"
