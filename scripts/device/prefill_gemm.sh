#!/usr/bin/env bash
# Run on a lent GPU with a carried build: `bench gemm` at prefill-sized M on the Llama-8B and Nemotron shapes,
# the heuristic's kernel against dequantize + cuBLAS forced, to place the threshold between them.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
run() {  # label, args
  local label=$1; shift
  ./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m ${MS:-64,96,128,192} "$@" 2>>"$LOG" |
    grep -E "^(llama|nemotron)" | awk -v b="$label" '{printf "%-6s %-34s M=%-4s %-16s %8s us  bf16 %8s us\n", b, $1" "$2, $5, $6, $7, $12}'
}
{ run heur; run deq --variant dequant+cublas --no-baselines; } | sort -k2,3 -k4,4 -s | tee "$OUT/prefill_gemm.txt"
