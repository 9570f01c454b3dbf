#!/usr/bin/env bash
# Nsight Compute on fp4lab, three ways:
#   scripts/device/ncu.sh step [MODEL:QUANT ...]     GPU time of a batch-1 decode step, kernel by kernel
#   scripts/device/ncu.sh kernel REGEX [ARGS ...]    one launch of the kernels matching REGEX in detail
#   scripts/device/ncu.sh sass REGEX                 the sm_90a SASS of the functions matching REGEX
# step: `generate` (128-token prompt, 5 new tokens) with every kernel timed (gpu__time_duration, graph nodes
#   one by one), the last three forwards (decode steps) summed by kernel name and divided by three. Default
#   "llama:nvfp4 nemotron:nvfp4". Kernels run one at a time, so no launch gap and no programmatic-launch overlap
#   shows, and time in which no kernel runs (the host part of a step) does not either: compare the sum with
#   the wall-clock step.
# kernel: ARGS is the fp4lab command line (default: Llama-8B NVFP4 batch-1 `generate`); with `bench gemm ...`
#   it profiles a GEMM alone, e.g. `ncu.sh kernel decode bench gemm --models none --shape 28672x4096 --m 1
#   --no-baselines --reps 2 --warmup 2`. Prints the key metrics and stall lines; the report goes to
#   $OUT/ncu-kernel.txt, and with SOURCE=1 the SASS with per-instruction stall samples to $OUT/ncu-source.csv.
# Environment (and BUILD/BIN, OUT from common.sh):
#   NCU_FLAGS  ncu options (default "--cache-control none --clock-control none": warm caches at the card's own
#              clocks, as in a real step; ncu's defaults flush the caches and lock the base clock, which
#              inflates short kernels). Set it empty for ncu's defaults
#   GEN_ARGS   step: extra `generate` flags (e.g. --no-fused-rope, "--attn-splits 4")
#   TOP        step: kernels listed per spec (default 14)
#   SECTIONS   kernel: ncu section options (default "--set full")
#   SKIP       kernel: launches of the kernel to skip first (default 100: past warm-up and prefill)
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
mode=${1:-step}
[ $# -gt 0 ] && shift
NCU_FLAGS=${NCU_FLAGS---cache-control none --clock-control none}
card
case $mode in
step)
  specs=("$@")
  [ ${#specs[@]} = 0 ] && specs=(llama:nvfp4 nemotron:nvfp4)
  make_prompts 1 128
  for spec in "${specs[@]}"; do
    IFS=: read -r model quant <<<"$spec"
    f="$SCRATCH/ncu-step.csv"
    # shellcheck disable=SC2086  # NCU_FLAGS and GEN_ARGS are word lists
    ncu $NCU_FLAGS --metrics gpu__time_duration.sum --csv --graph-profiling node --log-file "$f" \
      "$BIN" generate --backend cuda --greedy --model "preset:$(preset "$model")" --quant "$quant" "${PROMPTS[@]}" \
      --max-new-tokens 5 ${GEN_ARGS:-} >/dev/null 2>>"$LOG"
    echo "== $spec ${GEN_ARGS:-} rc=$? (per decode step: the last 3 forwards / 3)"
    python3 - "$f" "${TOP:-14}" <<'PY'
import collections, csv, io, sys
text = open(sys.argv[1]).read()
rows = list(csv.reader(io.StringIO(text[text.index('"ID"'):])))
hdr, data = rows[0], rows[1:]
ki, vi, ui = hdr.index("Kernel Name"), hdr.index("Metric Value"), hdr.index("Metric Unit")
# Every forward starts with the embedding lookup, so the last three are decode steps.
starts = [i for i, r in enumerate(data) if "embed_kernel" in r[ki]]
tot, cnt = collections.Counter(), collections.Counter()
for r in data[starts[-3]:]:
    v = float(r[vi].replace(",", ""))
    v = v / 1000 if r[ui] in ("ns", "nsecond") else v if r[ui] in ("us", "usecond") else v * 1000
    name = r[ki].split("(")[0].replace("void ", "").replace("fp4lab::", "").replace("<unnamed>::", "").strip()
    tot[name] += v / 3
    cnt[name] += 1 / 3
s = sum(tot.values())
print(f"  step GPU time {s:8.1f} us in {sum(cnt.values()):.0f} kernels")
for n, v in tot.most_common(int(sys.argv[2])):
    print(f"  {n[:48]:48s} {v:8.1f} us {100 * v / s:5.1f}%  x{cnt[n]:.0f}")
PY
  done
  ;;
kernel)
  [ $# -ge 1 ] || { echo "ncu.sh kernel: which kernels (a regex)?" >&2; exit 2; }
  regex=$1
  shift
  cmd=("$@")
  if [ ${#cmd[@]} = 0 ]; then
    make_prompts 1 128
    cmd=(generate --backend cuda --greedy --model preset:llama-3.1-8b --quant nvfp4 "${PROMPTS[@]}" --max-new-tokens 8)
  fi
  rep="$SCRATCH/ncu-kernel"
  # shellcheck disable=SC2086  # NCU_FLAGS and SECTIONS are word lists
  ncu $NCU_FLAGS ${SECTIONS:---set full} -k "regex:$regex" --launch-skip "${SKIP:-100}" --launch-count 1 \
    -o "$rep" -f "$BIN" "${cmd[@]}" >/dev/null 2>>"$LOG"
  echo "== ncu $regex rc=$?"
  ncu --import "$rep.ncu-rep" --page details >"$OUT/ncu-kernel.txt" 2>&1
  grep -E "^ +(Duration|Elapsed Cycles|SM Frequency|DRAM Throughput|Memory Throughput|L2 Cache Throughput|\
Compute \(SM\) Throughput|Registers Per Thread|Block Size|Grid Size|Waves Per SM|Achieved Occupancy|\
Theoretical Occupancy|Executed Instructions|Issue Slots Busy|Executed Ipc Active|\
Warp Cycles Per Issued Instruction|No Eligible|Eligible Warps Per Scheduler|Dynamic Shared Memory Per Block|\
Static Shared Memory Per Block) " "$OUT/ncu-kernel.txt" | sed 's/  */ /g'
  grep -iE "stall|estimated speedup" "$OUT/ncu-kernel.txt" | head -10 | cut -c1-300
  if [ "${SOURCE:-0}" = 1 ]; then
    ncu --import "$rep.ncu-rep" --page source --csv --print-source sass >"$OUT/ncu-source.csv" 2>&1
    echo "sass with stall samples: $(wc -l <"$OUT/ncu-source.csv") lines in $OUT/ncu-source.csv"
  fi
  ;;
sass)
  [ $# -ge 1 ] || { echo "ncu.sh sass: which functions (a regex)?" >&2; exit 2; }
  cuobjdump -sass -arch sm_90a "$BIN" 2>/dev/null |
    awk -v re="$1" '/Function : /{p = ($0 ~ re)} p' >"$OUT/sass.txt"
  echo "sass of /$1/: $(grep -c 'Function : ' "$OUT/sass.txt") functions, $(wc -l <"$OUT/sass.txt") lines" \
    "in $OUT/sass.txt"
  ;;
*)
  echo "ncu.sh: unknown mode '$mode' (step, kernel or sass; --help)" >&2
  exit 2
  ;;
esac
