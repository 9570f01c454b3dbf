#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: the GEMM tests (every variant against the CPU reference), then
# `bench gemm` on the Llama-8B and Nemotron shapes: the heuristic's decode kernels against the stream
# kernels (kernel-notes #35) at M = 1, 4, 8 (stream8, several run lengths), 16 and 32.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
if [ "${TESTS:-1}" = 1 ]; then
  ./build/tests/fp4lab_tests --gtest_filter="${FILTER:-GpuNvfp4.*:GpuKernels.Grouped*}" >>"$LOG" 2>&1
  echo "tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]|Failure|expected" "$LOG" | head -12
fi
B=(./build/fp4lab bench gemm --models llama-3.1-8b,nemotron-nano-9b-v2 --no-baselines)
row() { grep -E "^(llama|nemotron)" | awk -v tag="$1" '{printf "  %-10s %-34s M=%-3s %-16s %8s us %6s read\n", tag, $1" "$2, $5, $6, $7, $10}'; }
"${B[@]}" --m ${MS:-1,4,8,16,32} 2>>"$LOG" | tee -a "$LOG" | row auto
for c in ${CHUNKS:-4 8 16}; do
  "${B[@]}" --m 1,8 --variant stream8 --stream-chunks $c 2>>"$LOG" | tee -a "$LOG" | row s8/c$c
done
"${B[@]}" --m 16 --variant stream16 2>>"$LOG" | tee -a "$LOG" | row s16
"${B[@]}" --m 32 --variant stream32 2>>"$LOG" | tee -a "$LOG" | row s32
