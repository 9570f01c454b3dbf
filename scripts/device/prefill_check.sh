#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: the engine-kernel and engine GPU tests, then
# where prefill and batch-1 decode time goes (generate --profile) on the Nemotron and Llama presets, the
# tensor-core prefill's TTFT at 2K/8K prompts, and batch-1 decode with the given attention splits (SPLITS).
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter="${FILTER:-GpuKernels*:GpuEngine*}" >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$OUT/gputests.log") ok"
grep -E "FAILED  \]|flash prefill|Failure|Expected|Which is" "$OUT/gputests.log" | head -20
run() {  # label, then generate arguments; prints the timing line and the profile table
  local label=$1; shift
  ./build/fp4lab generate --backend cuda --greedy "$@" >/dev/null 2>"$OUT/gen.err"
  echo "== $label rc=$? $(grep -o 'prefill: .*' "$OUT/gen.err")"
  grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -${ROWS:-8}
}
for q in bf16 nvfp4; do
  run "nemotron $q prefill 2048 profile" --model preset:nemotron-nano-9b-v2 --quant $q --prompt-ids "$(prompt 2048)" --max-new-tokens 2 --profile
done
run "llama nvfp4 prefill 2048" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 2048)" --max-new-tokens 2
run "llama nvfp4 prefill 8192" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8192)" --max-new-tokens 2
ROWS=7 run "llama nvfp4 decode profile b1" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 128 --profile
for s in ${SPLITS:-0}; do
  ROWS=0 run "llama nvfp4 decode splits=$s (0: automatic)" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 --attn-splits $s
done
