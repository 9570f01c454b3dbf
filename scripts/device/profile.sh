#!/usr/bin/env bash
# Nsight Compute on chosen GEMM kernels (run on the lent GPU machine with a carried build/). Usage:
#   SHAPE=22656x4480 M=1 VARIANT=decode8 KERNEL=decode_kernel bash scripts/device/profile.sh
source "$(dirname "$0")/common.sh"
tag=${TAG:-$VARIANT-$M}
ncu --clock-control none --kernel-name "regex:${KERNEL}" --launch-skip 8 --launch-count 1 \
  --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section LaunchStats \
  --section Occupancy --section MemoryWorkloadAnalysis --section InstructionStats \
  ./build/fp4lab bench gemm --models "" --shape "$SHAPE" --m "$M" --variant "$VARIANT" --no-baselines --reps 2 \
  --warmup 1 --calls-per-rep 4 >"$OUT/ncu-$tag.txt" 2>&1
grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Executed Ipc A|Stall|One or More" "$OUT/ncu-$tag.txt" | head -40
