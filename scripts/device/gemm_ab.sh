#!/usr/bin/env bash
# Run on a lent GPU with several carried binaries (BINS): `bench gemm` on the Llama-8B and Nemotron shapes
# (heuristic variants, M from MS) with each binary in turn, REPS times, in one call; one line per shape and M.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
for rep in $(seq 1 ${REPS:-2}); do
  for bin in $BINS; do
    ./$bin bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m ${MS:-1,8} --no-baselines 2>>"$LOG" |
      grep -E "^(llama|nemotron)" | awk -v b="${bin##*/}" '{printf "%-12s %-34s M=%-3s %-14s %8s us %6s read\n", b, $1" "$2, $5, $6, $7, $10}'
  done
done | sort -k2,3 -k4,4 -s
