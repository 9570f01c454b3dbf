# shellcheck shell=bash
# Sourced by every script in scripts/device/ (not run on its own). Environment shared by all of them:
#   BUILD      build directory (default build): BIN=$BUILD/fp4lab, TESTS_BIN=$BUILD/tests/fp4lab_tests
#   BIN        the fp4lab binary, when it is not $BUILD/fp4lab
#   OUT        where results go (default /tmp/fp4lab-out); the device tool returns this folder
#   SCRATCH    per-run files that need not come back (default: a fresh temporary folder)
# Model names: llama (llama-3.1-8b), nemotron (nemotron-nano-9b-v2), llama70b (llama-3.3-70b) or any preset.

# No -e: a device call is expensive, so one failing run must not cost the runs after it; each run prints its rc.
set -uo pipefail

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
  # The usage is the script's leading comment block, so it cannot drift from a separate help text.
  sed -n '2,/^[^#]/{/^# shellcheck/d;/^#/s/^# \{0,1\}//p}' "$0"
  exit 0
fi

BUILD=${BUILD:-build}
BIN=${BIN:-./$BUILD/fp4lab}
TESTS_BIN=${TESTS_BIN:-./$BUILD/tests/fp4lab_tests}
OUT=${OUT:-/tmp/fp4lab-out}
# The device tool returns at most 8 files from $OUT, so only logs, summaries and JSON go there.
SCRATCH=${SCRATCH:-$(mktemp -d)}
mkdir -p "$OUT" "$SCRATCH"
LOG="$OUT/log.txt"
# The lent multi-GPU machines have NVLink multicast off; NCCL would fail trying it.
export NCCL_NVLS_ENABLE=0

# card: the GPUs and their clocks as found, on stdout and in the log (the lent cards differ between calls).
card() {
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee -a "$LOG"
}

# preset NAME: the preset behind a short model name.
preset() {
  case $1 in
    llama) echo llama-3.1-8b ;;
    nemotron) echo nemotron-nano-9b-v2 ;;
    llama70b) echo llama-3.3-70b ;;
    *) echo "$1" ;;
  esac
}

# make_prompts COUNT LEN: PROMPTS=(--prompt-ids ... x COUNT), prompt i being the ids i .. i + LEN - 1, so the
# sequences of a batch differ.
make_prompts() {
  local i
  PROMPTS=()
  for i in $(seq 1 "$1"); do PROMPTS+=(--prompt-ids "$(seq -s, "$i" $((i + $2 - 1)))"); done
}
