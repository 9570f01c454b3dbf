#!/usr/bin/env bash
# The test command: builds with warnings as errors, runs every test (GPU tests skip without a GPU and are
# counted), then runs each libFuzzer target for a fixed budget.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
# The layering rule (no include from a lower layer to a higher one), before spending time on a build.
python3 scripts/check_layers.py
bash scripts/install-deps.sh --test
bash scripts/build.sh -DFP4LAB_WERROR=ON
# The official openai npm client that the serve tests drive (pinned by tests/serve/package-lock.json).
npm ci --prefix tests/serve --no-audit --no-fund --loglevel=error
set +e
ctest --test-dir build -j"$(nproc)" --output-on-failure 2>&1 | tee build/ctest.log
rc=${PIPESTATUS[0]}
set -e
# Skips by reason. Only "no GPU" and "fewer GPUs than the test needs" are allowed: a test whose data or tool is
# missing fails instead, so a green run means every test that could run here ran.
summary=$(python3 scripts/test_summary.py build/ctest.log build/Testing/Temporary/LastTest.log) || rc=1
echo "$summary" | tail -n +2
[ "$rc" -eq 0 ] || { echo "$summary" | head -1; exit "$rc"; }

# The server under AddressSanitizer (leaks included) and UBSan: its threads, sockets and request lifetimes are
# where a leak or a use-after-free would hide. Each server process the tests start must exit 0, which
# LeakSanitizer refuses when anything leaked.
cmake -S . -B build-asan -DFP4LAB_CUDA=OFF -DFP4LAB_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j"$(nproc)" --target fp4lab fp4lab_tests
if ! ASAN_OPTIONS=detect_leaks=1 build-asan/tests/fp4lab_tests --gtest_filter='Serve*' >build-asan/serve.log 2>&1; then
  tail -60 build-asan/serve.log
  echo "serve tests under the sanitizers: FAILED (build-asan/serve.log)"
  exit 1
fi
echo "serve tests under ASan/UBSan: $(grep -o '[0-9]* tests\? passed\|PASSED.*' build-asan/serve.log | tail -1)"

# Fuzzers: a separate clang build of the parsers with ASan/UBSan and libFuzzer.
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DFP4LAB_CUDA=OFF -DFP4LAB_FUZZ=ON -DFP4LAB_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_safetensors_header fuzz_model_config fuzz_quant_config fuzz_tokenizer_json fuzz_tokenizer_encode fuzz_chat_template fuzz_openai_request
for t in safetensors_header model_config quant_config tokenizer_json tokenizer_encode chat_template openai_request; do
  work=$(mktemp -d)
  cp fuzz/corpus/$t/* "$work/"
  if ! build-fuzz/fuzz/fuzz_$t -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 "$work" >build-fuzz/fuzz_$t.log 2>&1; then
    tail -40 build-fuzz/fuzz_$t.log
    echo "fuzz_$t: FAILED (a crash reproducer is in build-fuzz/fuzz_$t.log)"
    exit 1
  fi
  echo "fuzz_$t: $(grep -o 'Done [0-9]* runs' build-fuzz/fuzz_$t.log) in ${FUZZ_SECONDS}s, no finding"
  rm -rf "$work"
done
# The closing line: passed, failed, skipped by reason.
echo "$summary" | head -1
