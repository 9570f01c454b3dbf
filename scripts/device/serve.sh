#!/usr/bin/env bash
# `fp4lab serve` against `fp4lab bench` on the presets: per model and quantization, bench in process at batch 1
# and 32, then the server on the same preset and `bench serve` (random prompts) at each concurrency and over a
# request-rate list, all into one results database that `fp4lab report` draws, and a summary with the ratios
# issue 31 asks about (concurrency 1 against batch-1 decode, 32 against batch 32, µs per token).
#   scripts/device/serve.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   MODELS       space-separated models (llama, nemotron or presets; default "llama nemotron")
#   QUANTS       space-separated quantizations (default "nvfp4 bf16")
#   IN, NEW      prompt and generated tokens per request (default 128, 256)
#   CONC         concurrencies of the closed-loop runs (default "1 32"); bench runs at the same batch sizes
#   C_PROMPTS    requests per closed-loop run: "C:N ..." (default "1:8 32:64"; others: 2 x concurrency)
#   RATES        request rates of the open-loop sweep, comma-separated (default 1,4,16,64; empty: none)
#   RATE_PROMPTS requests per rate (default 24)
#   MAX_SEQS     serve --max-num-seqs (default 64)
#   BENCH_REPS   bench --reps (default 3)
#   SERVE_ARGS   more `serve` flags for every server
# Output: $OUT/serve.txt (the summary), $OUT/serve.db (every run: `fp4lab report $OUT/serve.db`),
# $OUT/serve.json (bench's and bench serve's documents by model and quantization), $OUT/log.txt.
# Examples:
#   scripts/device/serve.sh
#   MODELS=llama QUANTS=nvfp4 RATES= scripts/device/serve.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-llama nemotron}
QUANTS=${QUANTS:-nvfp4 bf16}
IN=${IN:-128}
NEW=${NEW:-256}
CONC=${CONC:-1 32}
C_PROMPTS=${C_PROMPTS:-1:8 32:64}
RATES=${RATES-1,4,16,64}
RATE_PROMPTS=${RATE_PROMPTS:-24}
MAX_SEQS=${MAX_SEQS:-64}
BENCH_REPS=${BENCH_REPS:-3}
TOKENIZER=tests/data/tokenizers/qwen2
DB="$OUT/serve.db"
PORT=8123
card
prompts_for() {
  local kv
  for kv in $C_PROMPTS; do [ "${kv%%:*}" = "$1" ] && { echo "${kv#*:}"; return; }; done
  echo $(($1 * 2))
}
wait_healthy() {

  for _ in $(seq 1 600); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" \
      2>/dev/null && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
batches=$(tr ' ' ',' <<<"$CONC")
for m in $MODELS; do
  p=$(preset "$m")
  for q in $QUANTS; do
    tag="$m-$q"
    "$BIN" bench --backend cuda --model "preset:$p" --quant "$q" --sweep-batch "$batches" --input-len "$IN" \
      --output-len "$NEW" --reps "$BENCH_REPS" --db "$DB" --json "$SCRATCH/bench-$tag.json" >>"$LOG" 2>&1
    echo "== $tag: bench rc=$?"
    # shellcheck disable=SC2086  # SERVE_ARGS is a word list
    "$BIN" serve --backend cuda --model "preset:$p" --quant "$q" --tokenizer "$TOKENIZER" --no-chat-template \
      --max-num-seqs "$MAX_SEQS" --max-model-len $((IN + NEW + 64)) --port "$PORT" ${SERVE_ARGS:-} \
      >"$SCRATCH/serve-$tag.log" 2>&1 &
    pid=$!
    if ! wait_healthy "$pid"; then
      echo "== $tag: the server did not come up"; tail -5 "$SCRATCH/serve-$tag.log"
      kill -9 "$pid" 2>/dev/null; cat "$SCRATCH/serve-$tag.log" >>"$LOG"; continue
    fi
    common=(--endpoint "http://127.0.0.1:$PORT/v1" --random-input-len "$IN" --random-output-len "$NEW"
      --label "fp4lab-$q")
    "$BIN" bench serve "${common[@]}" --num-prompts 4 --max-concurrency 2 --no-db >/dev/null 2>&1  # warm-up
    for c in $CONC; do
      "$BIN" bench serve "${common[@]}" --num-prompts "$(prompts_for "$c")" --max-concurrency "$c" --db "$DB" \
        --json "$SCRATCH/serve-$tag-c$c.json" >>"$LOG" 2>&1
      echo "== $tag: concurrency $c rc=$?"
    done
    if [ -n "$RATES" ]; then
      "$BIN" bench serve "${common[@]}" --num-prompts "$RATE_PROMPTS" --request-rate "$RATES" --db "$DB" \
        --json "$SCRATCH/serve-$tag-rates.json" >>"$LOG" 2>&1
      echo "== $tag: rates $RATES rc=$?"
    fi
    kill -TERM "$pid"; wait "$pid"; echo "== $tag: serve exit $?"
    grep -v '^$' "$SCRATCH/serve-$tag.log" | tail -3
    cat "$SCRATCH/serve-$tag.log" >>"$LOG"
  done
done
python3 - "$SCRATCH" "$OUT/serve.json" <<'PY' | tee "$OUT/serve.txt"
import glob, json, os, statistics, sys
scratch, out = sys.argv[1], sys.argv[2]
docs = {}
for f in sorted(glob.glob(os.path.join(scratch, "*.json"))):
    try:
        docs[os.path.basename(f)[:-5]] = json.load(open(f))
    except ValueError as e:
        print(f"{f}: {e}")
json.dump(docs, open(out, "w"), indent=1)
mean = lambda v: statistics.mean(v) if isinstance(v, list) and v else (v or 0)
def bench_row(tag, batch):
    for run in docs.get("bench-" + tag, {}).get("runs", []):
        if run["options"]["batch"] == batch:
            return run["measurements"][0]
for name, doc in docs.items():
    if not name.startswith("serve-"):
        continue
    tag = name[len("serve-"):].rsplit("-", 1)[0]
    for r in doc.get("results", [doc]):
        c, e = r.get("max_concurrency"), r.get("server_engine", {})
        line = (f"{tag:14s} rate {str(r['request_rate']):>4s} conc {str(c):>4s}  ok {r['completed']:3d}"
                f" fail {r['failed']}  out {r['output_throughput']:8.1f} tok/s  TTFT {r['mean_ttft_ms']:7.1f}"
                f" ms  TPOT mean {r['mean_tpot_ms']:6.3f} p50 {r['median_tpot_ms']:6.3f}  ITL p50"
                f" {r['median_itl_ms']:6.3f} p99 {r['p99_itl_ms']:6.2f} ms")
        if e:
            line += (f"  | step {e['mean_step_ms']:6.3f} ms, loop {e['loop_us_per_step']:5.1f} us/step,"
                     f" text {e['stream_us_per_token']:4.1f} us/token")
        b = bench_row(tag, c) if isinstance(c, int) else None
        if b:
            d, t = mean(b["decode_tok_s"]), mean(b["tokens_per_s"])
            tp = 1e3 * b["tpot_s_p50"]
            line += (f"\n{'':14s} bench batch {c}: decode {d:.1f} tok/s, end to end {t:.1f}, TPOT p50 {tp:.3f} ms"
                     f" -> serve/decode {r['output_throughput'] / d:.3f}, serve/e2e {r['output_throughput'] / t:.3f},"
                     f" TPOT +{1e3 * (r['median_tpot_ms'] - tp):.0f} us (median), +{1e3 * (r['mean_tpot_ms'] - tp):.0f}"
                     f" us (mean)")
        print(line)
PY
