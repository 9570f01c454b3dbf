#!/usr/bin/env bash
# Run on a lent GPU with the current build and a base binary (BASE, default build/fp4lab-base): the decode
# GEMV loop rework (kernel-notes #40). GEMM tests, then `bench gemm` A/B on the Llama-8B and Nemotron shapes at
# M = MS (default 1,8,32), then ncu's instruction count and issue figures for Llama gate_up at M = 1 with each
# binary, and the SASS of the one-token decode kernel.
source "$(dirname "$0")/common.sh"
BASE=${BASE:-build/fp4lab-base}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
if [ -x build/tests/fp4lab_tests ]; then
  ./build/tests/fp4lab_tests --gtest_filter="${FILTER:-GpuNvfp4.*}" >>"$LOG" 2>&1
  echo "tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]" "$LOG" | head -8
fi
BINS="$BASE build/fp4lab" MS=${MS:-1,8,32} REPS=${REPS:-2} bash scripts/device/gemm_ab.sh | tee "$OUT/gemm_ab.txt"
for bin in $BASE build/fp4lab; do
  ncu --cache-control none --clock-control none --section SpeedOfLight --section WarpStateStats \
    --section InstructionStats --section SchedulerStats --section Occupancy -k regex:decode --launch-skip 5 \
    --launch-count 1 ./$bin bench gemm --models none --shape 28672x4096 --m 1 --no-baselines --reps 2 --warmup 2 \
    >"$OUT/ncu-${bin##*/}.txt" 2>&1
  echo "== ncu ${bin##*/}: $(grep -E '^ +(Duration|Executed Instructions |Issue Slots Busy|Registers Per Thread|Warp Cycles Per Issued Instruction) ' "$OUT/ncu-${bin##*/}.txt" | sed 's/  */ /g' | tr '\n' ';')"
done
cuobjdump -sass -arch sm_90a ./build/fp4lab 2>/dev/null |
  awk '/Function : .*decode_kernelILi1ELi1ELi8ELi4E/{p=1; print; next} /Function : /{p=0} p' >"$OUT/decode8-sass.txt"
echo "sass lines $(wc -l <"$OUT/decode8-sass.txt")"
