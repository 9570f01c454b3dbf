#!/usr/bin/env bash
# Run on a lent GPU machine with a carried build/: kernel-by-kernel GPU time of a few graph-replayed decode
# steps under ncu (gpu__time_duration, kernels serialized, so no launch gaps and no PDL overlap), summed by
# kernel name, for the Llama-8B and Nemotron presets in NVFP4 and BF16 at batch 1. NCU_FLAGS: extra ncu
# options; "--cache-control none --clock-control none" keeps the caches warm and the card at its own clocks
# (ncu's defaults flush the caches before every kernel and lock the base clock, which inflates short kernels).
# GEN_ARGS: extra `generate` flags (e.g. --no-fused-norm). BIN: the binary (default build/fp4lab).
source "$(dirname "$0")/common.sh"
SPECS=${SPECS:-"llama-3.1-8b:nvfp4 nemotron-nano-9b-v2:nvfp4 llama-3.1-8b:bf16 nemotron-nano-9b-v2:bf16"}
for spec in $SPECS; do
  spec=${spec/:/ }
  set -- $spec
  f="$OUT/ncu-$1-$2.csv"
  ncu ${NCU_FLAGS:-} --metrics gpu__time_duration.sum --csv --graph-profiling node --log-file "$f" \
    ${BIN:-./build/fp4lab} generate --backend cuda --greedy --model preset:$1 --quant $2 --prompt-ids "$(prompt 128)" \
    --max-new-tokens 5 ${GEN_ARGS:-} >/dev/null 2>"$OUT/ncu.err"
  echo "== $1 $2 ${GEN_ARGS:-} rc=$? (per decode step: the last 3 forwards / 3)"
  python3 - "$f" <<'PY'
import csv, sys, collections, io, re
text = open(sys.argv[1]).read()
rows = list(csv.reader(io.StringIO(text[text.index('"ID"'):])))
hdr, data = rows[0], rows[1:]
ki, vi, ui = hdr.index('Kernel Name'), hdr.index('Metric Value'), hdr.index('Metric Unit')
# Each forward starts with the embedding lookup: the last three forwards are decode steps.
starts = [i for i, r in enumerate(data) if 'embed_kernel' in r[ki]]
sel = data[starts[-3]:]
tot = collections.Counter(); cnt = collections.Counter()
for r in sel:
    v = float(r[vi].replace(',', ''))
    v = v / 1000 if r[ui] in ('ns', 'nsecond') else v if r[ui] in ('us', 'usecond') else v * 1000
    name = r[ki].split('(')[0].replace('void ', '').replace('fp4lab::', '').replace('<unnamed>::', '').strip()
    tot[name] += v / 3; cnt[name] += 1 / 3
s = sum(tot.values())
print(f"  step GPU time {s:8.1f} us in {sum(cnt.values()):.0f} kernels")
for n, v in tot.most_common(14):
    print(f"  {n[:48]:48s} {v:8.1f} us {100*v/s:5.1f}%  x{cnt[n]:.0f}")
PY
done
[ "${LMHEAD:-1}" = 1 ] || exit 0
./build/fp4lab bench gemm --shape 128256x4096 --shape 131072x4480 --models "" --m 1 >"$OUT/gemm-lmhead.txt" 2>&1
grep -E "shape|128256|131072" "$OUT/gemm-lmhead.txt"
