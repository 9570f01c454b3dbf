#!/usr/bin/env bash
# Installs the Debian packages fp4lab builds with, only those missing. The CUDA toolkit is not a Debian
# package here: when /usr/local/cuda/bin/nvcc exists the CUDA backend is built, otherwise the CPU build.
set -euo pipefail
PKGS=(cmake make g++ clang libclang-rt-14-dev clang-format nlohmann-json3-dev libcli11-dev libgtest-dev
      libsqlite3-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libssl-dev libcpp-httplib-dev python3 pkg-config gnuplot-nox)
# --test: also what the test suite needs beyond the build (Chromium renders the HTML report headless).
[ "${1:-}" = "--test" ] && PKGS+=(chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# --test: Node.js and npm run the openai client in the serve tests; any install of them will do (a
# distribution's or NodeSource's, which bundles npm), so they are looked up as commands.
if [ "${1:-}" = "--test" ]; then
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi
if ((${#missing[@]})); then
  echo "fp4lab: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
