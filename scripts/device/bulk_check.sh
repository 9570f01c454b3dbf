#!/usr/bin/env bash
# Run on a lent GPU: the bulk-copy decode kernel (kernel-notes #40). The GEMM tests (the new ring test among
# them) and a compute-sanitizer pass over the bulk test, then `bench gemm` at M = 1 and 32 on the Llama-8B
# and Nemotron shapes: the heuristic's register kernel against forced bulk-copy forms (ring stages, warps).
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4.*' >>"$LOG" 2>&1
echo "gemm tests rc=$?"; grep -E "FAILED  \]|Failure|M=" "$LOG" | head -8
compute-sanitizer --tool memcheck ./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4.BulkCopy*' >"$OUT/memcheck.txt" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.txt")"
compute-sanitizer --tool racecheck ./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4.BulkCopy*' >"$OUT/racecheck.txt" 2>&1
echo "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck.txt" | head -1)"
run() {  # label, M, args
  local label=$1 m=$2; shift 2
  ./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m "$m" --no-baselines "$@" 2>>"$LOG" |
    grep -E "^(llama|nemotron)" | awk -v b="$label" '{printf "%-10s %-34s M=%-3s %-18s %8s us %6s read\n", b, $1" "$2, $5, $6, $7, $10}'
}
for rep in 1 2; do
  run heur 1
  run b4 1 --variant decode8 --decode-stages 4
  run b8 1 --variant decode8 --decode-stages 8
  run b12 1 --variant decode8 --decode-stages 12
  run w16b4 1 --variant decode8 --decode-warps 16 --decode-stages 4
  run heur 32
  run b4 32 --variant decode32 --decode-stages 4
  run b8 32 --variant decode32 --decode-stages 8
done | sort -k2,3 -k4,4 -s | tee "$OUT/bulk.txt"
