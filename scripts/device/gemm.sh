#!/usr/bin/env bash
# `fp4lab bench gemm` on the model shapes: the heuristic's kernels against cuBLAS BF16 / cuBLASLt FP8, forced
# variants against each other, or several binaries (A/B), interleaved over ROUNDS, medians per row.
#   scripts/device/gemm.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   MODELS     --models (default nemotron-nano-9b-v2,llama-3.1-8b; none: only SHAPES)
#   SHAPES     extra NxK shapes, space-separated (e.g. "128256x4096 131072x4480": the two lm_heads)
#   MS         --m list (default: bench gemm's own, 1 to 4096)
#   FLAGS      '|'-separated `bench gemm` flags, one arm per entry and binary (default: one arm, no flags: the
#              heuristic's choice). "--variant decode8 --decode-warps 8|--variant decode8 --decode-warps 16"
#              compares two forms; forced variants run without the baselines
#   BINS       binaries (default $BUILD/fp4lab); several: A/B of the same arms
#   ROUNDS     rounds of every binary and arm (default 1)
#   GEMM_ARGS  flags for every run (e.g. --no-baselines, --no-pdl, "--reps 10")
# Output: $OUT/gemm.txt, one row per shape, M and arm: the plan, median µs, % of the read ceiling (a read-only
# kernel over the same bytes), cuBLAS BF16 and BF16 GEMV µs where measured. With one binary, arm and round
# $OUT/gemm.txt is bench gemm's own table and $OUT/gemm.json its JSON (as in docs/perf/data/gemm-*).
# Examples:
#   MODELS=nemotron-nano-9b-v2,llama-3.1-8b,qwen3-8b scripts/device/gemm.sh
#   BINS="build/fp4lab-base build/fp4lab" MS=1,8,32 ROUNDS=2 GEMM_ARGS=--no-baselines scripts/device/gemm.sh
#   MS=128,1024,4096 FLAGS='|--variant wgmma128 --rows-per-block 128' scripts/device/gemm.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
MODELS=${MODELS:-nemotron-nano-9b-v2,llama-3.1-8b}
BINS=${BINS:-$BIN}
IFS='|' read -r -a arms <<<"${FLAGS:-}"
[ ${#arms[@]} = 0 ] && arms=("")
args=(--models "$MODELS")
for s in ${SHAPES:-}; do args+=(--shape "$s"); done
[ -n "${MS:-}" ] && args+=(--m "$MS")
card
runs=0
for round in $(seq 1 "${ROUNDS:-1}"); do
  for bin in $BINS; do
    for flags in "${arms[@]}"; do
      runs=$((runs + 1))
      base=()
      case " $flags " in *" --variant "*) base=(--no-baselines) ;; esac
      j="$SCRATCH/gemm-$runs.json"
      # shellcheck disable=SC2086  # flags and GEMM_ARGS are word lists
      "$bin" bench gemm "${args[@]}" "${base[@]}" ${GEMM_ARGS:-} $flags --json "$j" >"$SCRATCH/gemm-$runs.txt" \
        2>>"$LOG"
      echo "${bin##*/} ${flags:-(heuristic)} round $round: rc=$?"
      printf '%s\t%s\n' "${bin##*/}${flags:+ $flags}" "$j" >>"$SCRATCH/index"
      cat "$SCRATCH/gemm-$runs.txt" >>"$LOG"
    done
  done
done
if [ "$runs" = 1 ]; then
  cp "$SCRATCH/gemm-1.txt" "$OUT/gemm.txt"
  cp "$SCRATCH/gemm-1.json" "$OUT/gemm.json"
  cat "$OUT/gemm.txt"
  exit 0
fi
python3 - "$SCRATCH/index" <<'PY' | tee "$OUT/gemm.txt"
import collections, json, statistics, sys
rows = collections.defaultdict(list)
arms = []
for line in open(sys.argv[1]):
    arm, path = line.rstrip("\n").split("\t")
    if arm not in arms:
        arms.append(arm)
    try:
        doc = json.load(open(path))
    except (OSError, ValueError):
        continue
    for r in doc["rows"]:
        rows[(r["shape"], r["m"], arms.index(arm))].append(r)
med = lambda rs, k: statistics.median(r[k] for r in rs) if all(k in r for r in rs) else float("nan")
w = max(len(a) for a in arms)
print(f"{'shape':34s} {'M':>5s} {'arm':{w}s} {'plan':16s} {'µs':>9s} {'%read':>6s} {'bf16 µs':>9s} {'gemv µs':>9s}")
for (shape, m, a), rs in sorted(rows.items()):
    plan = rs[-1].get("plan", rs[-1]["variant"])
    print(f"{shape:34s} {m:5d} {arms[a]:{w}s} {plan:16s} {med(rs, 'nvfp4_us'):9.2f}"
          f" {med(rs, 'pct_read_ref'):5.1f}% {med(rs, 'cublas_bf16_us'):9.2f} {med(rs, 'bf16_gemv_us'):9.2f}")
PY
