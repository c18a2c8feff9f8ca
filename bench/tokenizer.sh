#!/usr/bin/env bash
# Tokenizer throughput, baukit-cpp beside the npm encoder gpt-tokenizer (r50k_base), on the same ~4 MB of varied
# text, in one run. Prints both and the ratio.   bench/tokenizer.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
work=$build/bench-data
mkdir -p "$work"
if [[ ! -d "$work/node_modules/gpt-tokenizer" ]]; then (cd "$work" && npm install --silent --no-save gpt-tokenizer@2 >/dev/null); fi
cmake --build "$build" --target bench-tokenizer >/dev/null
# ~4 MB: the test vectors (prose, code, numbers, contractions, whitespace runs, emoji, CJK, ...) with varying numbers.
python3 - "$work/text.txt" <<'PY'
import json, random, sys
vectors = [v['text'] for v in json.load(open('tests/data/tokenizer/vectors.json'))['vectors']]
random.seed(0)
parts, size = [], 0
while size < 4_000_000:
    s = random.choice(vectors) + f" {random.randint(0, 99999)}\n"
    parts.append(s); size += len(s.encode())
open(sys.argv[1], 'w', encoding='utf-8').write(''.join(parts))
PY
cpp=$("$build/bench/bench-tokenizer" models/default "$work/text.txt")
cp bench/tokenizer_bench.mjs "$work/"  # ES modules resolve packages from the script's folder
node_result=$(cd "$work" && node tokenizer_bench.mjs text.txt)
echo "$cpp"
echo "$node_result"
python3 -c "import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print(f\"ratio baukit-cpp / gpt-tokenizer: {a['mb_per_s']/b['mb_per_s']:.2f}x (target >= 3); same token count: {a['tokens']==b['tokens']}\")" "$cpp" "$node_result"
