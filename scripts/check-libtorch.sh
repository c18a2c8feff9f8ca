#!/usr/bin/env bash
# Builds baukit-cpp against another libtorch (pytorch.org's 2.x archive, or a pip torch's, with or without CUDA) and
# runs the test suite with it: with --cuda first with BAUKIT_TEST_DEVICE=cuda (the model, parity, generation and
# command tests on the GPU; they fail where that libtorch sees no GPU), then on the CPU.
#   scripts/check-libtorch.sh [--cuda] TORCH_CMAKE_PREFIX [BUILD_DIR]
# TORCH_CMAKE_PREFIX: the folder holding share/cmake/Torch (an unpacked libtorch archive, or
# `python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'`). The other dependencies come from the system
# or from CMAKE_PREFIX_PATH. Extra ctest arguments: BAUKIT_CTEST_ARGS (e.g. "-E Chromium" without a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=0
if [[ "${1:-}" == "--cuda" ]]; then cuda=1; shift; fi
torch_prefix=${1:?usage: scripts/check-libtorch.sh [--cuda] TORCH_CMAKE_PREFIX [BUILD_DIR]}
build=${2:-build-libtorch}
export CMAKE_PREFIX_PATH="$torch_prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"  # the install test's consumer too
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --parallel "$(nproc)" -- -k 0
# Several test processes at once: give each few threads.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
status=0
if ((cuda)); then
  echo "== the tests with BAUKIT_TEST_DEVICE=cuda"
  # shellcheck disable=SC2086
  BAUKIT_TEST_DEVICE=cuda ctest --test-dir "$build" --output-on-failure --parallel "$(( $(nproc) / 2 ))" ${BAUKIT_CTEST_ARGS:-} || status=1
fi
echo "== the tests on the CPU"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" ${BAUKIT_CTEST_ARGS:-} || status=1
exit $status
