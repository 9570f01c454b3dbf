#!/usr/bin/env bash
# The main job: builds fp4lab, reports the GPU (or the CPU backend) and runs the built-in benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/fp4lab doctor
./build/fp4lab demo format
