#!/usr/bin/env bash
# A/B of `fp4lab generate`: the same runs with several binaries and/or flag sets ("arms") in one call,
# interleaved, REPS rounds, then the median per case and arm. The lent cards differ by up to ~7% between calls
# and 2-5% between single runs, so only arms measured in the same call, over several rounds, compare.
#   scripts/device/ab.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   BINS      binaries (default: "$BUILD/fp4lab-base $BUILD/fp4lab" where the base exists, else $BUILD/fp4lab);
#             a base is a binary built from an earlier commit and carried along
#   FLAGS     '|'-separated extra `generate` flags, one arm per entry and binary (default: one arm, no flags).
#             '|--no-pdl' compares the default with --no-pdl in the same binary
#   CASES     space-separated MODEL:QUANT:BATCH[:PROMPT[:NEW]]: model (llama, nemotron, llama70b or a preset),
#             bf16 or nvfp4, sequences decoded together, tokens per prompt (default 128), new tokens per
#             sequence (default 256 at batch 1-2, else 64). Default: "llama:nvfp4:1 nemotron:nvfp4:1
#             llama:bf16:1 llama:nvfp4:32 nemotron:nvfp4:32 llama:nvfp4:1:8064:128" (the last: 8K context)
#   REPS      rounds (default 3)
#   GEN_ARGS  flags for every run (e.g. "--tp 2", "--temperature 0.8 --top-k 50" with GREEDY=0)
#   GREEDY    1 (default): --greedy, so flag arms that must not change the result can be checked for equal ids
#   METRIC    decode (default) or prefill: which tok/s the medians take
# With --profile in FLAGS or GEN_ARGS each run also prints its op classes (events around each op, graphs off).
# Output: a line per run (case, arm, rc, generate's timing line, a hash of the ids), then the medians, each with
# "ids differ" where an arm's ids were not those of the case's first arm; $OUT/ab.txt holds the lines,
# $OUT/log.txt generate's stderr.
# Examples:
#   BINS="build/fp4lab-base build/fp4lab" scripts/device/ab.sh
#   FLAGS='|--no-fused-mamba' CASES='nemotron:nvfp4:1 nemotron:bf16:1 nemotron:nvfp4:32' scripts/device/ab.sh
#   FLAGS='--attn-splits 1|--attn-splits 4|--attn-splits 8|--attn-splits 0' CASES=llama:nvfp4:1 scripts/device/ab.sh
#   FLAGS='--tp 1|--tp 2' CASES='llama70b:nvfp4:1:128:64 llama70b:nvfp4:32:128:32' REPS=1 scripts/device/ab.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
if [ -z "${BINS:-}" ]; then
  BINS=$BIN
  [ -x "./$BUILD/fp4lab-base" ] && BINS="./$BUILD/fp4lab-base $BIN"
fi
CASES=${CASES:-llama:nvfp4:1 nemotron:nvfp4:1 llama:bf16:1 llama:nvfp4:32 nemotron:nvfp4:32 llama:nvfp4:1:8064:128}
REPS=${REPS:-3}
METRIC=${METRIC:-decode}
IFS='|' read -r -a arms <<<"${FLAGS:-}"
[ ${#arms[@]} = 0 ] && arms=("")
greedy=(); [ "${GREEDY:-1}" = 1 ] && greedy=(--greedy)
card
R="$OUT/ab.txt"
: >"$R"
for _ in $(seq 1 "$REPS"); do
  for c in $CASES; do
    IFS=: read -r model quant batch len new <<<"$c"
    len=${len:-128}
    [ -n "${new:-}" ] || { new=64; [ "$batch" -le 2 ] && new=256; }
    make_prompts "$batch" "$len"
    for bin in $BINS; do
      for flags in "${arms[@]}"; do
        arm="${bin##*/}${flags:+ $flags}"
        # shellcheck disable=SC2086  # flags and GEN_ARGS are word lists
        "$bin" generate --backend cuda "${greedy[@]}" --model "preset:$(preset "$model")" --quant "$quant" \
          --batch "$batch" --max-new-tokens "$new" "${PROMPTS[@]}" ${GEN_ARGS:-} $flags \
          >"$SCRATCH/gen.out" 2>"$SCRATCH/gen.err"
        rc=$?
        printf '%s\t%s\trc=%s\t%s\tids=%s\n' "$c" "$arm" "$rc" "$(grep -o 'prefill: .*' "$SCRATCH/gen.err" | head -1)" \
          "$(md5sum <"$SCRATCH/gen.out" | cut -c1-8)" | tee -a "$R"
        case " ${GEN_ARGS:-} $flags " in
          *" --profile "*) grep -E '^  ' "$SCRATCH/gen.err" | sort -k2 -n -r | head -12 ;;
        esac
        cat "$SCRATCH/gen.err" >>"$LOG"
      done
    done
  done
done
echo "== median $METRIC tok/s per case and arm"
python3 - "$R" "$METRIC" <<'PY'
import collections, re, statistics, sys
runs, ids, order = collections.defaultdict(list), collections.defaultdict(set), []
for line in open(sys.argv[1]):
    case, arm, rc, timing, h = line.rstrip("\n").split("\t")
    m = re.search(sys.argv[2] + r": .*?\(([\d.]+) tok/s\)", timing)
    if rc != "rc=0" or not m:
        continue
    if (case, arm) not in runs:
        order.append((case, arm))
    runs[(case, arm)].append(float(m.group(1)))
    ids[(case, arm)].add(h)
first, w = {}, max((len(a) for _, a in order), default=0)
for case, arm in order:
    first.setdefault(case, arm)
    v = runs[(case, arm)]
    note = "" if ids[(case, arm)] == ids[(case, first[case])] else "  ids differ"
    print(f"{case:24s} {arm:{w}s} {statistics.median(v):9.1f}  runs {' '.join(f'{x:.1f}' for x in v)}{note}")
PY
