#!/usr/bin/env bash
# A small card simulated on a big one: `bench` and a GSM8K slice under --gpu-memory-limit against the same runs
# unlimited, with the memory plan, fp4lab's buffer peak and the process peak (NVML) of each; then a tighter
# limit (the lm_head quantized at load too) and one too small to hold the weights (one error before loading).
#   scripts/device/memory.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   MODEL   default preset:nemotron-nano-9b-v2 (the GSM8K runs use its tokenizer, mistral-v1)
#   LIMIT   the simulated card (default 7.5GiB: an 8 GB card less what the driver keeps)
#   TIGHT   the tighter limit (default 6.5GiB); TOO_SMALL the one that cannot fit (default 4GiB)
#   REPS    bench --reps (default 3)
# Output: $OUT/bench-*.json and $OUT/gsm8k-*.json per limit, their key lines printed; the rest in $OUT/log.txt.
# Example:
#   REPS=2 scripts/device/memory.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-preset:nemotron-nano-9b-v2}
LIMIT=${LIMIT:-7.5GiB}
TIGHT=${TIGHT:-6.5GiB}
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader | tee -a "$LOG"
"$BIN" inspect "$MODEL" --memory --quant nvfp4 --context 384 --gpu-memory-limit "$LIMIT" | tail -14
limit_args() { [ "$1" = none ] || echo "--gpu-memory-limit $1"; }
show() {  # show [REGEX]: the result lines matching REGEX and the memory line of the last run
  [ -z "$1" ] || grep -E "$1" "$SCRATCH/run.txt" | head -3
  grep "GPU memory" "$SCRATCH/run.err"
  cat "$SCRATCH/run.txt" "$SCRATCH/run.err" >>"$LOG"
}
for lim in none "$LIMIT" "$TIGHT"; do
  tag=${lim//./_}
  # shellcheck disable=SC2046  # limit_args is a word list
  "$BIN" bench --model "$MODEL" --quant nvfp4 --input-len 128 --output-len 256 --reps "${REPS:-3}" --no-db \
    $(limit_args "$lim") --json "$OUT/bench-$tag.json" >"$SCRATCH/run.txt" 2>"$SCRATCH/run.err"
  echo "bench limit=$lim rc=$?"
  show "nvfp4 "
done
# The tight limit is left out here: what matters for GSM8K's long prompts is the simulated card.
for lim in none "$LIMIT"; do
  tag=${lim//./_}
  # shellcheck disable=SC2046  # limit_args is a word list
  "$BIN" eval gsm8k --model "$MODEL" --backend cuda --quant nvfp4 --tokenizer tests/data/tokenizers/mistral-v1 \
    --data tests/data/gsm8k --limit 50 --batch 4 --no-db $(limit_args "$lim") --json "$OUT/gsm8k-$tag.json" \
    >"$SCRATCH/run.txt" 2>"$SCRATCH/run.err"
  echo "gsm8k limit=$lim rc=$?"
  tail -2 "$SCRATCH/run.txt"
  show ''
done
"$BIN" bench --model "$MODEL" --quant nvfp4 --reps 1 --no-db --gpu-memory-limit "${TOO_SMALL:-4GiB}" \
  >/dev/null 2>"$SCRATCH/run.err"
echo "bench limit=${TOO_SMALL:-4GiB} rc=$? (should fail before loading)"
cat "$SCRATCH/run.err"
