#!/usr/bin/env bash
# Run on a lent GPU machine (two GPUs for the TP part) with a carried build/: every GPU test,
# compute-sanitizer memcheck of the engine kernels, batch sweeps of the Nemotron and Llama presets, a
# 2048-token prefill bench, long-context Llama, and tensor-parallel decode of the 70B preset with its per-op
# profile. Full logs and JSON under $OUT (few files: the device tool returns a limited number).
source "$(dirname "$0")/common.sh"
LOG="$OUT/log.txt"
nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >>"$LOG" 2>&1
echo "gpu tests rc=$? $(grep -c 'OK \]' "$LOG") ok"; grep -E "FAILED  \]|TP=2 vs|chunked scan|flash prefill" "$LOG" | head -24
compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/fp4lab_tests \
  --gtest_filter='GpuKernels.FlashAttentionPrefillMatchesCpuAttention:GpuKernels.ChunkedSsd*:GpuKernels.Conv1d*:GpuKernels.Grouped*:GpuEngine.PrefillThenDecode*' \
  >>"$LOG" 2>&1
echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$LOG" | tail -1)"
if [ "${SWEEP:-1}" = 1 ]; then
  for model in nemotron-nano-9b-v2 llama-3.1-8b; do
    ./build/fp4lab bench --model preset:$model --reps 1 --sweep-batch 1,8,32 --no-db \
      --json "$OUT/sweep-$model.json" >>"$LOG" 2>&1
    echo "sweep $model rc=$?"; grep -A5 "speedup vs batch" "$LOG" | tail -6
  done
  ./build/fp4lab bench --model preset:nemotron-nano-9b-v2 --reps 1 --input-len 2048 --output-len 16 --no-db \
    --json "$OUT/prefill2048-nemotron.json" >>"$LOG" 2>&1
  echo "prefill 2048 rc=$?"; python3 -c "
import json; d=json.load(open('$OUT/prefill2048-nemotron.json'))
for m in d['measurements']:
  v = m.get('prefill_tok_s', 0); v = sum(v) / len(v) if isinstance(v, list) else v
  print(' ', m.get('quant'), 'prefill tok/s', round(v, 1))"
fi
gen() {  # label, then generate arguments
  local label=$1; shift
  ./build/fp4lab generate --backend cuda --greedy "$@" >/dev/null 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'prefill: .*' "$OUT/gen.err")"; cat "$OUT/gen.err" >>"$LOG"
}
gen "llama8b nvfp4 8K ctx" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 8064)" --max-new-tokens 128
gen "llama8b nvfp4 b1" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ] && [ "${TP:-1}" = 1 ]; then
  for tp in 1 2; do
    gen "70B tp=$tp b1" --model preset:llama-3.3-70b --quant nvfp4 --tp $tp --prompt-ids "$(prompt 128)" --max-new-tokens 64
    gen "70B tp=$tp b32" --model preset:llama-3.3-70b --quant nvfp4 --tp $tp "${B32[@]}" --batch 32 --max-new-tokens 32
  done
  gen "70B tp=2 b1 profile" --model preset:llama-3.3-70b --quant nvfp4 --tp 2 --prompt-ids "$(prompt 128)" --max-new-tokens 32 --profile
  grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -9
  gen "70B tp=1 b1 profile" --model preset:llama-3.3-70b --quant nvfp4 --tp 1 --prompt-ids "$(prompt 128)" --max-new-tokens 32 --profile
  grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -9
  for model in llama-3.1-8b nemotron-nano-9b-v2; do
    ./build/fp4lab bench --model preset:$model --tp 2 --reps 1 --output-len 128 --no-db \
      --json "$OUT/bench-$model-tp2.json" >>"$LOG" 2>&1
    echo "bench $model tp=2 rc=$?"; grep -E "^  (bf16|nvfp4) " "$LOG" | tail -2 | cut -c1-150
  done
fi
