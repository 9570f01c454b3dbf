#!/usr/bin/env bash
# Run on a lent multi-GPU machine with a carried build/: every GPU test (the TP=1/TP=2 ones
# included), then tensor-parallel decode of the Llama-3.3-70B preset (TP=1 vs TP=2, batch 1 and 32, graphs on
# and off) and bench --tp on the 8B-class presets. Full logs and JSON under $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
nvidia-smi topo -m | head -4
if [ "${TESTS:-1}" = 1 ]; then
  ./build/tests/fp4lab_tests --gtest_filter="${FILTER:-Gpu*}" >"$OUT/gputests.log" 2>&1
  echo "gpu tests rc=$? $(grep -c 'OK \]' "$OUT/gputests.log") ok"; grep -E "FAILED  \]|TP=2 vs" "$OUT/gputests.log" | head -20
fi
P128=$(seq -s, 1 128)
gen() {  # label, then generate arguments
  local label=$1; shift
  ./build/fp4lab generate --backend cuda --model preset:llama-3.3-70b --quant nvfp4 --greedy "$@" \
    >>"$OUT/tp.log" 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'prefill: .*' "$OUT/gen.err")"
}
if [ "${GEN:-1}" = 1 ]; then
  for tp in 1 2; do
    gen "70B tp=$tp b1" --tp $tp --prompt-ids "$P128" --max-new-tokens 64
    gen "70B tp=$tp b32" --tp $tp "${B32[@]}" --batch 32 --max-new-tokens 32
  done
  gen "70B tp=2 b1 no-graphs" --tp 2 --no-graphs --prompt-ids "$P128" --max-new-tokens 64
fi
for model in ${BENCH:-llama-3.1-8b nemotron-nano-9b-v2}; do
  for tp in 1 2; do
    ./build/fp4lab bench --model preset:$model --tp $tp --reps 1 --output-len 128 --no-db \
      --json "$OUT/bench-$model-tp$tp.json" >"$OUT/bench.txt" 2>/dev/null
    echo "bench $model tp=$tp rc=$?"; grep -E "^  (bf16|nvfp4) |tensor parallel" "$OUT/bench.txt" | cut -c1-160
  done
done
