#!/usr/bin/env bash
# Tokenizer speed side by side in one run: baukit-cpp beside Hugging Face's JavaScript implementation
# (@huggingface/tokenizers) for Llama 3 and Gemma 3, and beside gpt-tokenizer for GPT-2, on the same ~2 MB of varied
# text (the tokenizer tests' strings, numbers between them): load time, MB/s as one text and line by line.
#   bench/tokenizer.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cmake -DSOURCE=tests/data/tokenizers -DDEST="$build/tokenizers" -P tests/data/tokenizers/setup.cmake
cmake --build "$build" --target bench-tokenizer >/dev/null
text=$build/tokenizers/bench-text.txt
python3 - "$text" <<'PY'
import json, random, sys
strings = []
for name in ['llama3', 'gemma3', 'qwen3', 'gpt2']:
    strings += [v['text'].replace('\n', ' ') for v in json.load(open(f'tests/data/tokenizers/{name}.json'))['vectors']
                if '<' not in v['text'] and '[' not in v['text']]
random.seed(0)
parts, size = [], 0
while size < 2_000_000:
    s = random.choice(strings) + f" {random.randint(0, 99999)}\n"
    parts.append(s); size += len(s.encode())
open(sys.argv[1], 'w', encoding='utf-8').write(''.join(parts))
PY
cp bench/tokenizer_bench.mjs "$build/tokenizers/"  # ES modules resolve packages from the script's folder
vocabularies=$build/tokenizers/vocabularies
results=()
for name in llama3 gemma3 gpt2; do
  cpp=$("$build/bench/bench-tokenizer" "$vocabularies/$name" "$text")
  if [[ $name == gpt2 ]]; then js=$(cd "$build/tokenizers" && node tokenizer_bench.mjs gpt-tokenizer - bench-text.txt)
  else js=$(cd "$build/tokenizers" && node tokenizer_bench.mjs hf "vocabularies/$name" bench-text.txt); fi
  echo "$name baukit-cpp: $cpp"
  echo "$name javascript: $js"
  results+=("$name" "$cpp" "$js")
done
python3 - "${results[@]}" <<'PY'
import json, sys
args = sys.argv[1:]
print(f"{'vocabulary':<10} {'reference':<26} {'one text':>22} {'line by line':>22} {'load':>20} same tokens")
for i in range(0, len(args), 3):
    name, cpp, js = args[i], json.loads(args[i + 1]), json.loads(args[i + 2])
    one = f"{cpp['mb_per_s']:.2f}/{js['mb_per_s']:.2f} MB/s {cpp['mb_per_s'] / js['mb_per_s']:.1f}x"
    lines = f"{cpp['lines_mb_per_s']:.2f}/{js['lines_mb_per_s']:.2f} MB/s {cpp['lines_mb_per_s'] / js['lines_mb_per_s']:.1f}x"
    load = f"{cpp['load_s']:.2f}/{js['load_s']:.2f} s {cpp['load_s'] / js['load_s']:.2f}x" if js['load_s'] else "-"
    same = cpp['tokens'] == js['tokens'] and cpp['line_tokens'] == js['line_tokens']
    print(f"{name:<10} {js['encoder']:<26} {one:>22} {lines:>22} {load:>20} {same}")
PY
