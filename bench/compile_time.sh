#!/usr/bin/env bash
# What including each baukit header costs a program, in compiler CPU time (user + system), against <torch/torch.h>
# alone, measured side by side in one run: an empty main() after each include, compiled as a user's program is
# (-O2, C++20, the flags baukit::baukit gives), without ccache or a precompiled header.
#   bench/compile_time.sh [HEADER ...]      (default: the umbrella header and each area's main header)
# Prints one line per header: seconds (best of 2) and the ratio to <torch/torch.h> alone; the target for the
# umbrella header <baukit/baukit.hpp> is at most 1.2 x.
set -euo pipefail
cd "$(dirname "$0")/.."
headers=("$@")
if [[ ${#headers[@]} -eq 0 ]]; then
  headers=(baukit/baukit.hpp baukit/hook.hpp baukit/trace.hpp baukit/modules.hpp baukit/models/auto.hpp
           baukit/models/gpt2.hpp baukit/models/llama.hpp baukit/tokenizer.hpp baukit/lens.hpp baukit/show.hpp
           baukit/lens_page.hpp baukit/io/checkpoint.hpp)
fi
flags=(-O2 -std=gnu++20 -fopenmp -DFMT_HEADER_ONLY=1 -D_GLIBCXX_USE_CXX11_ABI=1 -Iinclude
       -isystem /usr/include/torch/csrc/api/include -c -o /dev/null)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# CPU seconds to compile a file that includes <torch/torch.h> and then $1 (empty: nothing more), best of 2.
cost() {
  local source="$scratch/tu.cpp" best=""
  { echo "#include <torch/torch.h>"; [[ -n "$1" ]] && echo "#include <$1>"; echo "int main() { return 0; }"; } > "$source"
  for _ in 1 2; do
    local t
    t=$( { /usr/bin/time -f "%U %S" c++ "${flags[@]}" "$source" 2>&1 >/dev/null; } | tail -1 | awk '{print $1 + $2}')
    if [[ -z "$best" ]] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
  done
  echo "$best"
}

base=$(cost "")
printf '%-28s %7.2f s  1.00 x\n' "<torch/torch.h> alone" "$base"
for header in "${headers[@]}"; do
  t=$(cost "$header")
  printf '%-28s %7.2f s  %.2f x\n' "+ <$header>" "$t" "$(awk -v a="$t" -v b="$base" 'BEGIN { print a / b }')"
done
