#!/usr/bin/env bash
# Run on a lent GPU: every GPU test, then the decode speed with the RMSNorms fused into the NVFP4 GEMVs (the
# default) against --no-fused-norm, same binary, interleaved REPS times (kernel-notes #45): Llama-8B and
# Nemotron NVFP4 at batch 1, 8 and 32, and Llama BF16 at batch 1 for the ratio. The greedy ids of both runs are
# compared (synthetic weights: near-ties may flip late in the sequence).
source "$(dirname "$0")/common.sh"
card_and_gpu_tests
BIN=./build/fp4lab
ids() { grep -o '"new_ids".*' "$1" | head -c 400; }
for rep in $(seq 1 ${REPS:-2}); do
  for mode in fused unfused; do
    flag=(); [ $mode = unfused ] && flag=(--no-fused-norm)
    gen_decode $BIN "llama nvfp4 b1 $mode" --model preset:llama-3.1-8b --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 --json "$OUT/llama-b1-$mode.json" "${flag[@]}"
    gen_decode $BIN "nemotron nvfp4 b1 $mode" --model preset:nemotron-nano-9b-v2 --quant nvfp4 --prompt-ids "$(prompt 128)" --max-new-tokens 256 --json "$OUT/nemo-b1-$mode.json" "${flag[@]}"
  done
done
for mode in fused unfused; do
  flag=(); [ $mode = unfused ] && flag=(--no-fused-norm)
  gen_decode $BIN "llama nvfp4 b8 $mode" --model preset:llama-3.1-8b --quant nvfp4 "${B32[@]:0:16}" --batch 8 --max-new-tokens 64 "${flag[@]}"
  gen_decode $BIN "nemotron nvfp4 b8 $mode" --model preset:nemotron-nano-9b-v2 --quant nvfp4 "${B32[@]:0:16}" --batch 8 --max-new-tokens 64 "${flag[@]}"
  gen_decode $BIN "llama nvfp4 b32 $mode" --model preset:llama-3.1-8b --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 "${flag[@]}"
  gen_decode $BIN "nemotron nvfp4 b32 $mode" --model preset:nemotron-nano-9b-v2 --quant nvfp4 "${B32[@]}" --batch 32 --max-new-tokens 64 "${flag[@]}"
done
gen_decode $BIN "llama bf16 b1" --model preset:llama-3.1-8b --quant bf16 --prompt-ids "$(prompt 128)" --max-new-tokens 256
python3 - "$OUT" <<'PY'
import json, sys
for m in ("llama-b1", "nemo-b1"):
    try:
        a = json.load(open(f"{sys.argv[1]}/{m}-fused.json")); b = json.load(open(f"{sys.argv[1]}/{m}-unfused.json"))
        def ids(d):
            for k in ("new_ids", "outputs", "sequences"):
                if k in d: return d[k]
            return None
        x, y = ids(a), ids(b)
        print(m, "greedy ids identical:", x == y, "options.fused_norm:", a.get("options", {}).get("fused_norm"), b.get("options", {}).get("fused_norm"))
        if x != y and isinstance(x, list) and isinstance(y, list):
            fx = x[0] if x and isinstance(x[0], list) else x; fy = y[0] if y and isinstance(y[0], list) else y
            n = next((i for i, (p, q) in enumerate(zip(fx, fy)) if p != q), None)
            print("  first difference at new token", n, "of", len(fx))
    except Exception as e:
        print(m, "compare failed:", e)
PY
