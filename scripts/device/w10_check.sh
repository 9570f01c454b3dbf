#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: `bench gemm` of the decode GEMV at 8, 10 and 16 warps per block on
# shapes around two to three row tiles per SM (kernel-notes #69), then the heuristic's plans on the Nemotron
# and Llama shapes. The engine A/B against the commit before: release_check.sh with BASE set.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee -a "$LOG"
for w in 8 10 16; do
  echo "== bench gemm decode8, $w warps"
  ./build/fp4lab bench gemm --models "" --m 1,8 --no-baselines --variant decode8 --decode-warps $w \
    --shape 4480x10240 --shape 4480x15680 --shape 4352x10240 --shape 5120x10240 --shape 6144x14336 \
    2>>"$LOG" | grep -E "^custom"
done
echo "== bench gemm, heuristic plans"
./build/fp4lab bench gemm --models nemotron-nano-9b-v2,llama-3.1-8b --m 1,8 --no-baselines 2>>"$LOG" |
  grep -vE "^shape"
