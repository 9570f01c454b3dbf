# Sourced by the device scripts: strict mode, the output folder ($OUT, which the device tool returns), and no
# NVLink multicast for NCCL (the lent multi-GPU machines have it off). Test data comes with the tree (tests/data).
set -uo pipefail
OUT=${OUT:-/tmp/fp4lab-out}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT"
# The card, then every GPU test (unless TESTS=0), appended to $LOG with a one-line summary.
LOG="$OUT/log.txt"
card_and_gpu_tests() {
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
  [ "${TESTS:-1}" = 1 ] || return 0
  ./build/tests/fp4lab_tests --gtest_filter='Gpu*' >>"$LOG" 2>&1
  echo "gpu tests rc=$? $(grep -c '^\[       OK' "$LOG") ok"; grep -E "FAILED  \]" "$LOG" | head -12
}
# Token ids 1..N as a prompt; B32: 32 distinct 128-token prompts (--prompt-ids each) for batch-32 decode.
prompt() { seq -s, 1 "$1"; }
B32=(); for i in $(seq 1 32); do B32+=(--prompt-ids "$(seq -s, $i $((i + 127)))"); done
# gen_decode BINARY LABEL ARGS...: one greedy `generate` on the GPU, its decode line printed after the label
# (the full stderr appended to $LOG).
gen_decode() {
  local bin=$1 label=$2; shift 2
  $bin generate --backend cuda --greedy "$@" >"$OUT/gen.out" 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1)"; cat "$OUT/gen.err" >>"$LOG"
}
# sanitize FILTER TOOL...: compute-sanitizer with each tool over the tests matching FILTER (unless SANITIZE=0),
# full reports under $OUT, the summary line printed.
sanitize() {
  [ "${SANITIZE:-1}" = 1 ] || return 0
  local filter=$1 tool; shift
  for tool in "$@"; do
    compute-sanitizer --tool $tool ./build/tests/fp4lab_tests --gtest_filter="$filter" >"$OUT/sanitize-$tool.txt" 2>&1
    echo "compute-sanitizer $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize-$tool.txt" | tail -1)"
  done
}
# medians FILE: the median decode tok/s per (case, variant) of the gen_decode lines "CASE VARIANT rc=0 decode:
# ... (X tok/s)" in FILE, with every run listed.
medians() {
  python3 - "$1" <<'PY'
import re, sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) (\S+) rc=0 decode: .*\(([\d.]+) tok/s\)", line)
    if m: runs[(m.group(1), m.group(2))].append(float(m.group(3)))
for (c, b), v in sorted(runs.items()):
    print(f"{c:9s} {b:14s} median {statistics.median(v):8.1f} tok/s  runs {' '.join(f'{x:.1f}' for x in v)}")
PY
}
