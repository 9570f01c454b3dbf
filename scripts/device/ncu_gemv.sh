#!/usr/bin/env bash
# Run on a lent GPU: ncu sections (throughput, warp states, instruction mix, pipes, source hot spots) for one
# decode GEMV launch per form in FORMS ("label:bench gemm args"), on SHAPE (default Llama gate_up), warm caches
# and the card's own clocks; plus the SASS of the sm_90a decode kernels for counting instructions per chunk.
source "$(dirname "$0")/common.sh"
SHAPE=${SHAPE:-28672x4096}
FORMS=${FORMS:-"decode8:--variant decode8|w16:--variant decode8 --decode-warps 16"}
IFS='|' read -ra forms <<<"$FORMS"
for f in "${forms[@]}"; do
  label=${f%%:*}; args=${f#*:}
  ncu --cache-control none --clock-control none --section SpeedOfLight --section WarpStateStats \
    --section InstructionStats --section ComputeWorkloadAnalysis --section SchedulerStats --section Occupancy \
    --section LaunchStats --section SourceCounters -k regex:decode --launch-skip 30 --launch-count 1 \
    ./build/fp4lab bench gemm --models none --shape "$SHAPE" --m ${M:-1} --no-baselines --reps 2 --warmup 2 $args \
    >"$OUT/ncu-$label.txt" 2>&1
  echo "== $label ($args)"
  grep -E "^ +(Duration|SM Frequency|DRAM Throughput|Compute \(SM\) Throughput|Registers Per Thread|Achieved Occupancy|Warp Cycles Per Issued Instruction|Executed Ipc Active|Issue Slots Busy|Executed Instructions |No Eligible|Active Warps Per Scheduler|Eligible Warps Per Scheduler) " "$OUT/ncu-$label.txt" | sed 's/  */ /g'
  grep -iE "stall|pipe" "$OUT/ncu-$label.txt" | head -10 | cut -c1-260
done
cuobjdump -sass -arch sm_90a ./build/fp4lab 2>/dev/null | awk '/Function : .*decode/{p=1} /Function : /{if ($0 !~ /decode/) p=0} p' >"$OUT/decode-sass.txt"
echo "sass lines $(wc -l <"$OUT/decode-sass.txt")"
