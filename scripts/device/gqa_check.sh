#!/usr/bin/env bash
# Run on a lent GPU machine (two GPUs for the TP smoke tests) with a carried build/ and .shared/: every GPU
# test, memcheck of the GQA decode attention, batch sweeps of both presets, Llama-8B at an 8K context, and
# eval ppl / generate under --tp 2 on a tiny checkpoint. Full output under $OUT.
source "$(dirname "$0")/common.sh"
LOG="$OUT/log.txt"
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$LOG" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$LOG") ok"; grep -E "FAILED  \]|teacher-forced|split attention|Failure" "$LOG" | head -12
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuKernels.GqaDecode*:GpuEngine.BatchedDecode*' >>"$LOG" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$LOG" | tail -1)"
for model in nemotron-nano-9b-v2 llama-3.1-8b; do
  ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
    --json "$OUT/sweep-$model.json" >"$OUT/sweep.txt" 2>&1
  echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$OUT/sweep.txt"
done
./build/fp4lab generate --backend cuda --greedy --model preset:llama-3.1-8b --quant nvfp4 \
  --prompt-ids "$(seq -s, 1 8064)" --max-new-tokens 128 >/dev/null 2>"$OUT/gen.err"
echo "llama8b 8K ctx rc=$? $(grep -o 'prefill: .*' "$OUT/gen.err")"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  M=../shared/models/tiny-llama
  python3 -c "import json; g=json.load(open('$M/golden.json')); print(','.join(map(str, g['prompt_ids'] + g['greedy_new_ids'])))" >"$OUT/ids.txt"
  for tp in 1 2; do
    ./build/fp4lab eval ppl --model $M --tokens "$OUT/ids.txt" --backend cuda --tp $tp 2>&1 | tail -2 | sed "s/^/tp=$tp: /"
  done
  ./build/fp4lab generate --backend cuda --model $M --tp 2 --greedy --prompt-ids "$(head -c 60 "$OUT/ids.txt" | sed 's/,[^,]*$//')" \
    --max-new-tokens 8 2>&1 | head -3 | sed 's/^/tp=2 generate: /'
fi
