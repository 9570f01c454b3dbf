#!/usr/bin/env bash
# Run on the lent GPU machine with a carried build/: engine GPU tests (incl. batched decode), the Nemotron preset
# at several batch sizes, and a timed GSM8K slice through the whole pipeline. Full logs go to $OUT.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${TESTS:-1}" = 1 ]; then
  ./build/tests/fp4lab_tests --gtest_filter='GpuEngine.*' >"$OUT/enginetests.log" 2>&1
  echo "engine gpu tests rc=$?"; grep -E "OK \]|FAILED  \]" "$OUT/enginetests.log" | head -20
  grep -B2 -A8 "Failure" "$OUT/enginetests.log" | head -40
fi
for b in ${BATCHES:-1 8 32}; do
  ./build/fp4lab bench --model preset:nemotron-nano-9b-v2 --batch "$b" --reps 1 --no-db \
    --json "$OUT/bench_nemotron_b$b.json" >"$OUT/bench_b$b.txt" 2>"$OUT/bench_b$b.err"
  echo "bench batch $b rc=$?"; grep -E "^\|| tok/s|Speedup|decode" "$OUT/bench_b$b.txt" | head -12
done
if [ "${GSM:-1}" = 1 ]; then
  for q in ${GSM_QUANTS:-nvfp4 bf16}; do
    ./build/fp4lab eval gsm8k --model preset:nemotron-nano-9b-v2 --backend cuda --quant "$q" \
      --tokenizer tests/data/tokenizers/mistral-v1 --data tests/data/gsm8k --limit "${GSM_LIMIT:-128}" \
      --batch "${GSM_BATCH:-64}" --no-db --json "$OUT/gsm8k_$q.json" >"$OUT/gsm8k_$q.txt" 2>"$OUT/gsm8k_$q.err"
    echo "gsm8k $q rc=$?"; tail -2 "$OUT/gsm8k_$q.txt"; tail -c 300 "$OUT/gsm8k_$q.err"; echo
  done
fi
