#!/usr/bin/env bash
# Run on a lent 2-GPU machine with a carried build/ (and build/fp4lab-base, a binary of an earlier commit):
# every GPU test (the tensor-parallel ones included), then Llama-3.3-70B NVFP4 decode at TP=1 and TP=2, batch 1 and 32, with both
# binaries in the same call, and the TP=2 profile of the current one.
source "$(dirname "$0")/common.sh"
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader
./build/tests/fp4lab_tests --gtest_filter='Gpu*' >"$OUT/gputests.log" 2>&1
echo "gpu tests rc=$? $(grep -c '^\[       OK' "$OUT/gputests.log") ok"; grep -E "FAILED  \]|TP=2 vs" "$OUT/gputests.log" | head
P128=$(seq -s, 1 128)
gen() {  # binary, label, then generate arguments
  local bin=$1 label=$2; shift 2
  $bin generate --backend cuda --model preset:llama-3.3-70b --quant nvfp4 --greedy "$@" >/dev/null 2>"$OUT/gen.err"
  echo "$label rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1)"; cat "$OUT/gen.err" >>"$OUT/tp.log"
}
for bin in ./build/fp4lab-base ./build/fp4lab; do
  [ -x $bin ] || continue
  for tp in 1 2; do
    gen $bin "70B tp=$tp b1 ${bin##*/}" --tp $tp --prompt-ids "$P128" --max-new-tokens 128
    gen $bin "70B tp=$tp b32 ${bin##*/}" --tp $tp "${B32[@]}" --batch 32 --max-new-tokens 32
  done
done
gen ./build/fp4lab "70B tp=2 b1 profile" --tp 2 --prompt-ids "$P128" --max-new-tokens 32 --profile
grep -E "^  " "$OUT/gen.err" | sort -k2 -n -r | head -8
# Single-GPU batch 1 on the same machine, both binaries, and the current build's per-kernel step under ncu.
for model in llama-3.1-8b nemotron-nano-9b-v2; do
  for bin in ./build/fp4lab-base ./build/fp4lab; do
    [ -x $bin ] || continue
    $bin generate --backend cuda --greedy --model preset:$model --quant nvfp4 --prompt-ids "$P128" \
      --max-new-tokens 256 >/dev/null 2>"$OUT/gen.err"
    echo "$model nvfp4 b1 ${bin##*/} rc=$? $(grep -o 'decode: .*' "$OUT/gen.err" | head -1)"
  done
done
SPECS="${NCU_SPECS:-llama-3.1-8b:nvfp4 nemotron-nano-9b-v2:nvfp4}" LMHEAD=0 bash "$(dirname "$0")/ncu_step.sh"
