#!/usr/bin/env bash
# The main job: builds fp4lab, reports the GPU (or the CPU backend) and benchmarks BF16 against NVFP4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
mkdir -p results
./build/fp4lab doctor
# BF16 vs NVFP4 on the largest built-in preset that fits (the CPU backend on a small preset without a GPU).
stamp=$(date -u +%Y%m%dT%H%M%SZ)
./build/fp4lab bench --json "results/bench-$stamp.json"
# Tables and charts (Markdown + one self-contained HTML page); add result files of other machines to compare GPUs.
./build/fp4lab report results/bench-*.json --out results/report
