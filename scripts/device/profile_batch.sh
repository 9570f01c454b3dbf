#!/usr/bin/env bash
# Per-op-class GPU time of batched decode (run on the lent GPU machine, carried build/): MODEL (default the
# Nemotron preset), batch B, N new tokens, for each of QUANTS.
source "$(dirname "$0")/common.sh"
B=${B:-32}
args=()
for i in $(seq 1 "$B"); do args+=(--prompt-ids "$(seq -s, $((i * 3)) $((i * 3 + 127)))"); done
for q in ${QUANTS:-nvfp4 bf16}; do
  ./build/fp4lab generate --model preset:${MODEL:-nemotron-nano-9b-v2} --backend cuda --quant "$q" --batch "$B" \
    --max-new-tokens "${N:-32}" --greedy ${PROFILE---profile} "${args[@]}" >/dev/null 2>"$OUT/profile_${MODEL:-nemotron}_${q}_b$B.txt"
  echo "== ${MODEL:-nemotron} $q batch $B rc=$?"; grep -vE "^prompt" "$OUT/profile_${MODEL:-nemotron}_${q}_b$B.txt" | tail -25
done
