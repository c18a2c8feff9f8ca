#!/usr/bin/env bash
# The main job: installs the dependencies, builds baukit-lens, and writes the logit lens page.
# Arguments go to baukit-lens (default: the embedded model and ". The Space Needle is located in").
#   scripts/lens.sh --prompt "Hello, my name is also" --out lens.html
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${BAUKIT_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target baukit-lens --parallel "$(nproc)"
exec "$build/tools/baukit-lens" "$@"
