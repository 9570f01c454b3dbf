#!/usr/bin/env bash
# Run on a lent two-GPU machine with a carried build/: every GPU test, memcheck of the newest
# kernels, batch sweeps of both presets, where Nemotron's batch-1 decode time goes, and the 70B preset at TP=1
# and TP=2. Full output under $OUT.
source "$(dirname "$0")/common.sh"
LOG="$OUT/log.txt"
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$LOG" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$LOG") ok"; grep -E "FAILED  \]|Failure" "$LOG" | head
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuKernels.*:-GpuKernels.FlashAttentionPrefillThroughput' >>"$LOG" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$LOG" | tail -1)"
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >"$OUT/sweep.txt" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$OUT/sweep.txt"
done
gen() {
  local label=$1; shift
  ./build/fp4lab generate --backend cuda --greedy "$@" >/dev/null 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'prefill: .*' "$OUT/gen.err")"; cat "$OUT/gen.err" >>"$LOG"
}
gen "nemotron nvfp4 b1 profile" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(seq -s, 1 128)" --max-new-tokens 128 --profile
grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -12
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  for tp in 1 2; do
    gen "70B tp=$tp b1" --model preset:llama-3.3-70b --quant nvfp4 --tp $tp --prompt-ids "$(seq -s, 1 128)" --max-new-tokens 64
    gen "70B tp=$tp b32" --model preset:llama-3.3-70b --quant nvfp4 --tp $tp "${B32[@]}" --batch 32 --max-new-tokens 32
  done
fi
