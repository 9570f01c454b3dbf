#!/usr/bin/env bash
# Loading checkpoints from disk: the preset exported as full-size checkpoints (one per quantization), each
# loaded cold (page cache dropped) and warm, against the time `cat` takes to read the same files cold and warm;
# a BF16 checkpoint quantized at load; and the greedy ids of each checkpoint against the preset's.
#   scripts/device/load.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   MODEL    the preset to export (default preset:nemotron-nano-9b-v2)
#   QUANTS   checkpoint formats (default "nvfp4 bf16"); the 70B preset fits the lent disk as nvfp4 only
#   CK       where the checkpoints are written (default /tmp/fp4lab-ckpt; needs the page cache to be droppable)
#   PRESET=0 skips the preset runs and the id comparison
#   KEEP=1   keeps the checkpoints after the run
# Output: one line per step (export time and size, cat cold / warm, each load's timing line); everything in
# $OUT/log.txt. Needs root (drop_caches).
# Examples:
#   BUILD=build-sm90 scripts/device/load.sh
#   MODEL=preset:llama-3.3-70b QUANTS=nvfp4 BUILD=build-sm90 scripts/device/load.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-preset:nemotron-nano-9b-v2}
QUANTS=${QUANTS:-nvfp4 bf16}
CK=${CK:-/tmp/fp4lab-ckpt}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
echo "host: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; $(df -h /tmp | tail -1)" | tee -a "$LOG"
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
ms() { echo $((($(date +%s%N) - $1) / 1000000)); }
make_prompts 1 64
gen() {  # gen LABEL ARGS...: one greedy generate; its load line, decode line and ids (kept in $SCRATCH)
  local label=$1
  shift
  timeout 300 "$BIN" generate --backend cuda --greedy "${PROMPTS[@]}" --max-new-tokens 64 "$@" \
    >"$SCRATCH/$label.out" 2>"$SCRATCH/$label.err"
  echo "$label rc=$? | $(grep -o 'backend cuda, .*' "$SCRATCH/$label.err" | head -1) |" \
    "$(grep -o 'decode: .*' "$SCRATCH/$label.err")" | tee -a "$LOG"
  cat "$SCRATCH/$label.err" >>"$LOG"
}
same() {  # same A B WHAT: whether two runs gave the same ids
  if cmp -s "$SCRATCH/$1.out" "$SCRATCH/$2.out"; then echo "ids $3: same" | tee -a "$LOG"
  else echo "ids $3: DIFFER" | tee -a "$LOG"; fi
}
name=${MODEL#preset:}
for q in $QUANTS; do
  d=$CK/$name-$q
  rm -rf "$d"
  t=$(date +%s%N)
  timeout 500 "$BIN" export --model "$MODEL" --quant "$q" --out "$d" >"$SCRATCH/export.txt" 2>&1
  tee -a "$LOG" <"$SCRATCH/export.txt"
  echo "export $q: $(ms "$t") ms, $(du -sh "$d" | cut -f1)" | tee -a "$LOG"
  drop
  t=$(date +%s%N); cat "$d"/*.safetensors >/dev/null
  echo "cat $q cold: $(ms "$t") ms" | tee -a "$LOG"
  t=$(date +%s%N); cat "$d"/*.safetensors >/dev/null
  echo "cat $q warm: $(ms "$t") ms" | tee -a "$LOG"
  drop
  gen "$name-$q-cold" --model "$d"
  gen "$name-$q-warm" --model "$d"
  if [ "${PRESET:-1}" = 1 ]; then
    if [ "$q" = bf16 ]; then
      drop
      gen "$name-bf16-as-nvfp4-cold" --model "$d" --quant nvfp4
      gen "$name-bf16-as-nvfp4-warm" --model "$d" --quant nvfp4
    fi
    gen "$name-$q-preset" --model "$MODEL" --quant "$q"
    same "$name-$q-cold" "$name-$q-preset" "$q checkpoint against the preset"
    if [ "$q" = bf16 ] && [ -f "$SCRATCH/$name-nvfp4-preset.out" ]; then
      same "$name-bf16-as-nvfp4-cold" "$name-nvfp4-preset" "bf16 quantized at load against the nvfp4 preset"
    fi
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$d"
done
