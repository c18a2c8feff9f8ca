#!/usr/bin/env bash
# Installs everything baukit-cpp needs on Debian bookworm (run as root or with sudo available).
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp
  librange-v3-dev nlohmann-json3-dev catch2 libpcre2-dev libutf8proc-dev libsimdjson-dev libcli11-dev libfmt-dev
  libgloo-dev libcpp-httplib-dev doxygen
)
if [[ "${1:-}" == "--test" ]]; then
  # Headless browser for the page test; LLVM's libFuzzer runtime for the fuzzers (built by GCC, see tests/fuzz);
  # Node.js and npm for the tokenizer tests' vocabularies and references (tests/data/tokenizers), unless present.
  # python3-torch writes and reads the tuned-lens and Jacobian-lens files of the learned-lens tests (tests/data/learned_lens).
  packages+=(chromium libclang-rt-14-dev python3-torch)
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
