#!/usr/bin/env bash
# Installs the dependencies, builds everything and runs the whole test suite: ctest and the warning-free docs build
# (build/), then the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer and the fuzzers for a
# bounded time each (build-sanitize/). BAUKIT_SANITIZERS=0 skips the second part; BAUKIT_FUZZ_SECONDS sets the
# fuzzers' time (default 20 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test
build=${BAUKIT_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --parallel "$(nproc)"
cmake --build "$build" --target docs
ctest --test-dir "$build" --output-on-failure --no-tests=error --parallel "$(nproc)"

if [[ "${BAUKIT_SANITIZERS:-1}" != 0 ]]; then
  sanitize=${BAUKIT_SANITIZE_DIR:-build-sanitize}
  cmake -S . -B "$sanitize" -G Ninja -DCMAKE_BUILD_TYPE=None "-DCMAKE_CXX_FLAGS=-O1 -g1" -DBAUKIT_SANITIZE=ON \
    -DBAUKIT_BUILD_FUZZERS=ON -DBAUKIT_BUILD_BENCH=OFF -DBAUKIT_FUZZ_SECONDS="${BAUKIT_FUZZ_SECONDS:-20}"
  # Only what the tests run: the test program (with baukit-lens, which it drives) and the fuzzers.
  cmake --build "$sanitize" --parallel "$(nproc)" --target baukit_tests tracing-guide seed-notebook own-network \
    fuzz_safetensors fuzz_torch_bin fuzz_config fuzz_tokenizer fuzz_show
  # libtorch and the C++ runtime are not instrumented: leak reports at exit are theirs (static registries).
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$sanitize" --output-on-failure --no-tests=error --parallel "$(nproc)" -E install_and_consume
fi
