#!/usr/bin/env bash
# Run on a lent GPU with a carried build: `bench gemm` with each W4A16 variant forced (and the heuristic's
# choice with the cuBLAS baselines), one JSON per variant under $OUT and one sorted table: the data the variant
# heuristic (src/engine/gemm_heuristics.cpp) is fitted to. BIN, MODELS, MS and VARIANTS override the defaults;
# a variant written NAME:ROWS also passes --rows-per-block ROWS.
source "$(dirname "$0")/common.sh"
BIN=${BIN:-./build/fp4lab}
MODELS=${MODELS:-nemotron-nano-9b-v2,llama-3.1-8b}
MS=${MS:-64,128,256,512,1024,2048,4096}
VARIANTS=${VARIANTS:-wgmma64 wgmma128 wgmma256}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$LOG"
row() {  # label: the table rows of one bench run, prefixed
  awk -v b="$1" '/^(llama|nemotron|qwen)/ {printf "%-34s M=%-5s %-10s %-20s %9s us  bf16 %9s us\n", $1" "$2, $5, b, $6, $7, $12}'
}
{
  $BIN bench gemm --models "$MODELS" --m "$MS" --reps ${REPS:-7} --json "$OUT/gemm_auto.json" 2>>"$LOG" | row auto
  for spec in $VARIANTS; do
    v=${spec%%:*} rows=()
    [ "$spec" != "$v" ] && rows=(--rows-per-block "${spec#*:}")
    $BIN bench gemm --models "$MODELS" --m "$MS" --reps ${REPS:-7} --variant "$v" "${rows[@]}" --no-baselines \
      --json "$OUT/gemm_${spec/:/_r}.json" 2>>"$LOG" | row "$spec"
  done
} | sort -k1,2 -k3,3V -s | tee "$OUT/gemm_variants.txt"
