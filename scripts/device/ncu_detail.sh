#!/usr/bin/env bash
# Run on a lent GPU with a carried binary (BIN, default build/fp4lab): the full ncu section set for one
# instance of each kernel named in KERNELS during Llama-8B NVFP4 batch-1 decode (warm caches, the card's own
# clocks), the report under $OUT and its key lines printed.
source "$(dirname "$0")/common.sh"
BIN=${BIN:-./build/fp4lab}
for k in ${KERNELS:-attention_gqa_kernel rmsnorm_kernel}; do
  ncu --cache-control none --clock-control none --set full -k regex:$k --launch-skip ${SKIP:-200} --launch-count 1 \
    $BIN generate --backend cuda --greedy --model preset:${MODEL:-llama-3.1-8b} --quant nvfp4 \
    --prompt-ids "$(seq -s, 1 128)" --max-new-tokens 8 >"$OUT/ncu-$k.txt" 2>&1
  echo "== $k"
  grep -E "^ +(Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Registers Per Thread|Achieved Occupancy|Theoretical Occupancy|Block Size|Grid Size|Warp Cycles Per Issued Instruction|Executed Ipc Active|Dynamic Shared Memory Per Block|Static Shared Memory Per Block|Waves Per SM) " "$OUT/ncu-$k.txt" | sed 's/  */ /g'
  grep -iE "stall|estimated speedup" "$OUT/ncu-$k.txt" | head -8 | cut -c1-300
done
