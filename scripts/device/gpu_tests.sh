#!/usr/bin/env bash
# The GPU tests, then compute-sanitizer over some of them.
#   scripts/device/gpu_tests.sh [--help]
# Environment (and BUILD, OUT from common.sh):
#   FILTER     gtest filter of the tests to run (default 'Gpu*': every GPU test); empty: none
#   SANITIZE   gtest filter run under compute-sanitizer (default: none). Keep it to the kernels a change touched:
#              the tools slow a test down 10-100x
#   TOOLS      compute-sanitizer tools for SANITIZE (default "memcheck racecheck"; synccheck, initcheck)
#   SHOW       extended regex: log lines to print besides failures (e.g. 'TP=2 vs' for the TP test's diffs)
# Prints the card, the pass count and failures, one summary line per tool; the full output goes to $OUT/log.txt,
# each tool's report to $OUT/sanitize-TOOL.txt. Exits non-zero when a test or a tool reported an error.
# Examples:
#   scripts/device/gpu_tests.sh
#   FILTER= SANITIZE='GpuKernels.DecodeAttention*' scripts/device/gpu_tests.sh
#   FILTER='GpuNvfp4.*' SANITIZE='GpuNvfp4.SplitKIsDeterministic:GpuNvfp4.W4A4*' TOOLS=memcheck \
#     scripts/device/gpu_tests.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "$0")/common.sh"
FILTER=${FILTER-Gpu*}
SANITIZE=${SANITIZE:-}
TOOLS=${TOOLS:-memcheck racecheck}
card
status=0
if [ -n "$FILTER" ]; then
  t="$SCRATCH/gputests.txt"
  "$TESTS_BIN" --gtest_filter="$FILTER" >"$t" 2>&1
  rc=$?
  [ "$rc" = 0 ] || status=1
  echo "gpu tests ($FILTER) rc=$rc: $(grep -c '^\[       OK' "$t") ok, $(grep -c '^\[  SKIPPED' "$t") skipped"
  grep -E "^\[  FAILED  \]${SHOW:+|$SHOW}" "$t" | sort -u | head -30
  cat "$t" >>"$LOG"
fi
if [ -n "$SANITIZE" ]; then
  for tool in $TOOLS; do
    r="$OUT/sanitize-$tool.txt"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$TESTS_BIN" --gtest_filter="$SANITIZE" >"$r" 2>&1
    rc=$?
    [ "$rc" = 0 ] || status=1
    echo "compute-sanitizer $tool ($SANITIZE) rc=$rc: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$r" | tail -1)"
  done
fi
exit "$status"
