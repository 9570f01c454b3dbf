#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build (BUILD, default build-sm90): every GPU test, then the 9B
# preset exported as full-size checkpoints (ModelOpt NVFP4 and BF16) and loaded cold (page cache dropped) and
# warm, against the time `cat` takes to read the same files cold; quantize-at-load; and greedy ids of each
# checkpoint against its preset. MODEL=preset:llama-3.3-70b QUANTS=nvfp4 TESTS=0 runs the 70B-shaped part.
source "$(dirname "$0")/common.sh"
BUILD=${BUILD:-build-sm90}
BIN=./$BUILD/fp4lab
MODEL=${MODEL:-preset:nemotron-nano-9b-v2}
QUANTS=${QUANTS:-nvfp4 bf16}
CK=${CK:-/tmp/fp4lab-ckpt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; $(df -h /tmp | tail -1)" | tee -a "$LOG"
if [ "${TESTS:-1}" = 1 ]; then
  ./$BUILD/tests/fp4lab_tests --gtest_filter='Gpu*' >"$OUT/gputests.log" 2>&1
  echo "gpu tests rc=$? $(grep -c '^\[       OK' "$OUT/gputests.log") ok, $(grep -c '^\[  SKIPPED' "$OUT/gputests.log") skipped" | tee -a "$LOG"
  grep -E "FAILED  \]|SKIPPED \]" "$OUT/gputests.log" | head -12
fi
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
gen() {  # gen LABEL ARGS...: one greedy generate, its load line, decode line and ids
  local label=$1; shift
  timeout 300 $BIN generate --backend cuda --greedy --prompt-ids "$(prompt 64)" --max-new-tokens 64 "$@" \
    >"$OUT/$label.out" 2>"$OUT/$label.err"
  echo "$label rc=$? | $(grep -o 'backend cuda, .*' "$OUT/$label.err" | head -1) | $(grep -o 'decode: .*' "$OUT/$label.err")" | tee -a "$LOG"
  cat "$OUT/$label.err" >>"$LOG"
}
name=${MODEL#preset:}
for q in $QUANTS; do
  d=$CK/$name-$q
  rm -rf "$d"
  t=$(date +%s%N)
  timeout 500 $BIN export --model "$MODEL" --quant $q --out "$d" 2>>"$LOG" | tee -a "$LOG"
  echo "export $q: $(ms $t) ms, $(du -sh "$d" | cut -f1)" | tee -a "$LOG"
  drop
  t=$(date +%s%N); cat "$d"/*.safetensors >/dev/null
  echo "cat $q cold: $(ms $t) ms" | tee -a "$LOG"
  t=$(date +%s%N); cat "$d"/*.safetensors >/dev/null
  echo "cat $q warm: $(ms $t) ms" | tee -a "$LOG"
  drop
  gen "$name-$q-cold" --model "$d"
  gen "$name-$q-warm" --model "$d"
  [ "${PRESET:-1}" = 1 ] || { [ "${KEEP:-0}" = 1 ] || rm -rf "$d"; continue; }
  [ "$q" = bf16 ] && { drop; gen "$name-bf16-as-nvfp4-cold" --model "$d" --quant nvfp4; gen "$name-bf16-as-nvfp4-warm" --model "$d" --quant nvfp4; }
  gen "$name-$q-preset" --model "$MODEL" --quant $q
  if cmp -s "$OUT/$name-$q-cold.out" "$OUT/$name-$q-preset.out"; then
    echo "ids $q: checkpoint == preset" | tee -a "$LOG"
  else
    echo "ids $q: DIFFER" | tee -a "$LOG"; head -c 300 "$OUT/$name-$q-cold.out" "$OUT/$name-$q-preset.out"
  fi
  if [ "$q" = bf16 ] && [ -f "$OUT/$name-nvfp4-preset.out" ]; then
    cmp -s "$OUT/$name-bf16-as-nvfp4-cold.out" "$OUT/$name-nvfp4-preset.out" &&
      echo "ids bf16 quantized at load == nvfp4 preset" | tee -a "$LOG" || echo "ids bf16 quantized at load: DIFFER" | tee -a "$LOG"
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
done
