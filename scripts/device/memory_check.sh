#!/usr/bin/env bash
# The 8 GB card on a big one (issue 29): Nemotron-Nano-9B-v2 NVFP4 under --gpu-memory-limit 7.5GiB against the
# same run unlimited, bench and GSM8K, with the plan, fp4lab's buffer peak and the process peak (NVML) of each.
# BUILD: the build directory holding fp4lab (default build). Results go to $OUT.
set -uo pipefail
B=${BUILD:-build}/fp4lab
OUT=${OUT:-/tmp/memory_check}
mkdir -p "$OUT"
LIMIT=${LIMIT:-7.5GiB}
M=preset:nemotron-nano-9b-v2
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
"$B" inspect "$M" --memory --quant nvfp4 --context 384 --gpu-memory-limit "$LIMIT" | tail -14
for lim in none "$LIMIT"; do
  extra=(); [ "$lim" != none ] && extra=(--gpu-memory-limit "$lim")
  tag=${lim//./_}
  "$B" bench --model "$M" --quant nvfp4 --input-len 128 --output-len 256 --reps ${REPS:-3} --no-db "${extra[@]}" \
    --json "$OUT/bench_$tag.json" >"$OUT/bench_$tag.txt" 2>"$OUT/bench_$tag.err"
  echo "bench limit=$lim rc=$?"; grep -E "nvfp4 " "$OUT/bench_$tag.txt" | head -3; grep "GPU memory" "$OUT/bench_$tag.err"
done
for lim in none "$LIMIT"; do
  extra=(); [ "$lim" != none ] && extra=(--gpu-memory-limit "$lim")
  tag=${lim//./_}
  "$B" eval gsm8k --model "$M" --backend cuda --quant nvfp4 --tokenizer tests/data/tokenizers/mistral-v1 \
    --data tests/data/gsm8k --limit 50 --batch 4 --no-db "${extra[@]}" --json "$OUT/gsm8k_$tag.json" \
    >"$OUT/gsm8k_$tag.txt" 2>"$OUT/gsm8k_$tag.err"
  echo "gsm8k limit=$lim rc=$?"; tail -2 "$OUT/gsm8k_$tag.txt"; grep "GPU memory" "$OUT/gsm8k_$tag.err"
done
# Tighter: the embedding on the host is not enough, so the lm_head is quantized at load too (--lm-head auto).
"$B" bench --model "$M" --quant nvfp4 --input-len 128 --output-len 256 --reps ${REPS:-3} --no-db \
  --gpu-memory-limit 6.5GiB --json "$OUT/bench_6_5GiB.json" >"$OUT/bench_6_5GiB.txt" 2>"$OUT/bench_6_5GiB.err"
echo "bench limit=6.5GiB rc=$?"; grep -E "nvfp4 " "$OUT/bench_6_5GiB.txt" | head -3; grep "GPU memory" "$OUT/bench_6_5GiB.err"
# A limit that cannot hold even the NVFP4 weights: one error line before loading.
"$B" bench --model "$M" --quant nvfp4 --reps 1 --no-db --gpu-memory-limit 4GiB >/dev/null 2>"$OUT/too_small.err"
echo "bench 4GiB rc=$?"; cat "$OUT/too_small.err"
