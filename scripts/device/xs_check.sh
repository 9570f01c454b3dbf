#!/usr/bin/env bash
# Run on a lent GPU (kernel-notes #46): the GEMM tests (every variant against the CPU reference, xs32
# included), then `bench gemm` on the Llama-8B and Nemotron shapes at M = MS (default 16,32) with the
# heuristic's kernel and with xs32 forced at 128 and 64 rows per block, REPS times, one line per shape, M and
# kernel (µs, % of the read ceiling).
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
if [ "${TESTS:-1}" = 1 ]; then
  ./build/tests/fp4lab_tests --gtest_filter='GpuNvfp4.*:GpuKernels.Swiglu*:GpuKernels.Relu2*' >>"$LOG" 2>&1
  echo "gemm tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]|Failure" -A3 "$LOG" | head -20
fi
run() {
  ./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --m ${MS:-16,32} --no-baselines "$@" 2>>"$LOG" |
    grep -E "^(llama|nemotron)" | awk '{printf "%-34s M=%-3s %-20s %8s us %6s read\n", $1" "$2, $5, $6, $7, $10}'
}
for rep in $(seq 1 ${REPS:-2}); do
  run
  run --variant xs32 --rows-per-block 128
  run --variant xs32 --rows-per-block 64
done | sort -k1,2 -k3,3 -s
