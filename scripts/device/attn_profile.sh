#!/usr/bin/env bash
# Run on a lent GPU with a carried build/: where the GQA decode attention's time goes at batch 1 (Llama-8B
# NVFP4, 128-token prompt). The kernel's step time under ncu (warm caches, own clocks) with the attention
# splits forced to 4 / 8 / 12, then one decode launch under ncu's full section set with per-instruction stall
# sampling: the details page and the SASS with its samples ($OUT/attn-sass.csv).
source "$(dirname "$0")/common.sh"
for s in ${SPLITS:-4 8 12}; do
  echo "== splits $s"
  GEN_ARGS="--attn-splits $s" NCU_FLAGS="--cache-control none --clock-control none" SPECS="llama-3.1-8b:nvfp4" \
    LMHEAD=0 bash "$(dirname "$0")/ncu_step.sh" | grep -E "step GPU|attention"
done
ncu --set full --import-source no --cache-control none --clock-control none -k regex:attention_gqa \
  --launch-skip ${SKIP:-100} --launch-count 1 -o "$OUT/attn" -f ./build/fp4lab generate --backend cuda --greedy \
  --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 8 ${GEN_ARGS:-} \
  >/dev/null 2>"$OUT/attn-ncu.err"
echo "ncu full rc=$?"
ncu --import "$OUT/attn.ncu-rep" --page details --csv >"$OUT/attn-details.csv" 2>&1
ncu --import "$OUT/attn.ncu-rep" --page source --csv --print-source sass >"$OUT/attn-sass.csv" 2>&1
wc -l "$OUT"/attn-*.csv
