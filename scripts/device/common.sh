# Sourced by the device scripts: strict mode, the output folder ($OUT, which the device tool returns), no NVLink
# multicast for NCCL (the lent multi-GPU machines have it off), and ../shared populated from the carried
# .shared/ copy where the machine lacks it.
set -uo pipefail
OUT=${OUT:-/tmp/fp4lab-out}
export NCCL_NVLS_ENABLE=0
mkdir -p "$OUT" ../shared
for d in models data tokenizers; do [ -d ../shared/$d ] || { [ -d .shared/$d ] && cp -r .shared/$d ../shared/; }; done
