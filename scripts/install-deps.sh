#!/usr/bin/env bash
# Installs the Debian packages fp4lab builds with, only those missing. The CUDA toolkit is not a Debian
# package here: when /usr/local/cuda/bin/nvcc exists the CUDA backend is built, otherwise the CPU build.
set -euo pipefail
PKGS=(cmake make g++ clang libclang-rt-14-dev clang-format nlohmann-json3-dev libcli11-dev libgtest-dev
      libsqlite3-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libssl-dev python3 pkg-config gnuplot-nox)
# --test: also what the test suite needs beyond the build (Chromium renders the HTML report headless).
[ "${1:-}" = "--test" ] && PKGS+=(chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fp4lab: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
