#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: every decode-kernel configuration (16 or 32 weight rows per
# block, 4 or 8 warps) forced on the model shapes at M = 1, 8 (decode8) and 16 (decode16). Prints shape, M,
# variant, µs, % of copy bandwidth, % of the read ceiling; full output under $OUT. The pipeline-depth variants of
# kernel-notes #13b were measured with this script before they were removed.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
MODELS=${MODELS:-nemotron-nano-9b-v2 llama-3.1-8b}
for rows in 16 32; do
  for warps in 4 8; do
    for v in "decode8 1,8" "decode16 16"; do
      set -- $v
      ./build/fp4lab bench gemm --models $MODELS --m "$2" --variant "$1" --rows-per-block $rows \
        --decode-warps $warps --no-baselines --reps ${REPS:-10} >"$OUT/decode-$1-r$rows-w$warps.txt" 2>&1 ||
        { echo "FAILED $1 r$rows w$warps"; tail -2 "$OUT/decode-$1-r$rows-w$warps.txt"; }
    done
  done
done
cat "$OUT"/decode-*.txt | awk '$1 !~ /^shape|^bench/ && NF >= 10 {printf "%-34s %5s %-16s %8s %6s %6s\n", $1" "$2, $5, $6, $7, $9, $10}' |
  sort -k1,2 -k3,3n -k4,4 >"$OUT/decode-summary.txt"
cat "$OUT/decode-summary.txt"
