#!/usr/bin/env bash
# Engine runs through `fp4lab bench` (BF16 against NVFP4 unless BENCH_ARGS picks --quant): each model as a
# batch sweep or as one run, each run's JSON under $OUT and a summary table from it.
#   scripts/device/sweep.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   MODELS      space-separated models (llama, nemotron, llama70b or presets; default "llama nemotron")
#   SWEEP       --sweep-batch list (default 1,8,32); empty: one run, batch from BENCH_ARGS (--batch N)
#   BENCH_ARGS  more `bench` flags: "--input-len 2048 --output-len 16" (long prefill), "--batch 32
#               --prefill-tokens 0" (one prompt per forward), "--profile" (GPU time by op class), "--tp 2"
#   REPS        bench --reps (default 1)
#   BINS        binaries (default $BUILD/fp4lab); with several, each model runs with each in turn (A/B)
#   ROUNDS      rounds of every model and binary (default 1): with BINS, interleaved repeats
#   TAG         JSON names: $OUT/TAG-MODEL[-BIN].json, the last round's (default sweep)
# Output: per run the decode and prefill tok/s of each quantization, the NVFP4 / BF16 ratio, TTFT p99 and, with
# --profile, the largest op classes; bench's own output goes to $OUT/log.txt.
# Examples:
#   scripts/device/sweep.sh
#   SWEEP= MODELS=nemotron BENCH_ARGS="--input-len 2048 --output-len 16" REPS=3 TAG=prefill2048 \
#     scripts/device/sweep.sh
#   SWEEP= BENCH_ARGS="--batch 32 --input-len 128 --output-len 16" REPS=2 ROUNDS=2 \
#     BINS="build/fp4lab-base build/fp4lab" scripts/device/sweep.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-llama nemotron}
SWEEP=${SWEEP-1,8,32}
BINS=${BINS:-$BIN}
TAG=${TAG:-sweep}
sweep=(); [ -n "$SWEEP" ] && sweep=(--sweep-batch "$SWEEP")
nbins=$(wc -w <<<"$BINS")
card
for round in $(seq 1 "${ROUNDS:-1}"); do
  for m in $MODELS; do
    for bin in $BINS; do
      name="$TAG-$(preset "$m")"
      [ "$nbins" -gt 1 ] && name="$name-${bin##*/}"
      # shellcheck disable=SC2086  # BENCH_ARGS is a word list
      "$bin" bench --model "preset:$(preset "$m")" --reps "${REPS:-1}" "${sweep[@]}" ${BENCH_ARGS:-} --no-db \
        --json "$OUT/$name.json" >>"$LOG" 2>&1
      echo "== $name, round $round: rc=$?"
      python3 - "$OUT/$name.json" <<'PY'
import json, statistics, sys
try:
    doc = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"  no results ({e})")
mean = lambda v: statistics.mean(v) if isinstance(v, list) and v else (v or 0)
for run in doc.get("runs", [doc]):
    o, ms = run["options"], run["measurements"]
    base = mean(ms[0]["decode_tok_s"])
    for m in ms:
        d = mean(m["decode_tok_s"])
        print(f"  batch {o['batch']:3d} in {o['input_len']:5d} {m['quant']:6s} decode {d:9.1f} tok/s"
              f" ({d / base if base else 0:4.2f}x)  prefill {mean(m['prefill_tok_s']):9.1f} tok/s"
              f"  TTFT p99 {1000 * m['ttft_s_p99']:7.1f} ms")
        top = sorted(m.get("op_ms", {}).items(), key=lambda kv: -kv[1])[:8]
        if top:
            print("    " + ", ".join(f"{k} {v:.1f}" for k, v in top) + " ms")
PY
    done
  done
done
