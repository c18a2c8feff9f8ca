#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs the whole test suite (ctest) and the docs build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
build=${BAUKIT_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --parallel "$(nproc)"
cmake --build "$build" --target docs
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)"
