#!/usr/bin/env python3
"""Summarises a ctest run: first line "P passed, F failed, S skipped: REASON (N), ..." (the closing line of
scripts/test.sh), then one line per disallowed skip. Exits 1 when a test skipped for a reason other than the
two allowed ones, or when the counts cannot be read.

Usage: test_summary.py CTEST_OUTPUT LAST_TEST_LOG
"""
import collections
import re
import sys

ALLOWED = ("no GPU", "fewer GPUs than the test needs")

ctest_out = open(sys.argv[1], errors="replace").read()
last_log = open(sys.argv[2], errors="replace").read()

m = re.search(r"(\d+)% tests passed, (\d+) tests? failed out of (\d+)", ctest_out)
if not m:
    print("0 passed, 0 failed (ctest printed no totals)")
    sys.exit(1)
failed, total = int(m.group(2)), int(m.group(3))
skipped_names = re.findall(r"^\s*\d+ - (\S+) \(Skipped\)", ctest_out, re.M)

# LastTest.log holds each test's output between "N/M Testing: NAME" and its end marker.
reasons = collections.Counter()
bad = []
for block in re.split(r"^\d+/\d+ Testing: ", last_log, flags=re.M)[1:]:
    name = block.split("\n", 1)[0].strip()
    if name not in skipped_names:
        continue
    r = re.search(r"skipped: ([^\n(]*[^\s(])", block)
    reason = r.group(1).strip() if r else "no reason given"
    reasons[reason] += 1
    if not reason.startswith(ALLOWED):
        bad.append(f"{name}: skipped for a reason that is not allowed: {reason}")

skipped = len(skipped_names)
passed = total - failed - skipped
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped: " + ", ".join(
        r if len(reasons) == 1 else f"{r} ({n})" for r, n in reasons.most_common())
print(line)
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
