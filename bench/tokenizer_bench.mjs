// The JavaScript side of bench/tokenizer.sh, on the same text as bench-tokenizer: load time, one text, line by
// line; warm-up then the median of 3, as bench-tokenizer does.
//   node tokenizer_bench.mjs hf TOKENIZER_DIR TEXT   (@huggingface/tokenizers)
//   node tokenizer_bench.mjs gpt-tokenizer - TEXT     (gpt-tokenizer, r50k_base: GPT-2)
import { Tokenizer } from '@huggingface/tokenizers';
import { encode as r50kEncode } from 'gpt-tokenizer/encoding/r50k_base';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const [kind, dir, file] = process.argv.slice(2);
const median = (fn) => {
  fn();
  const times = [];
  for (let i = 0; i < 3; ++i) {
    const start = process.hrtime.bigint();
    fn();
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  return times.sort((a, b) => a - b)[1];
};
let encode, load = null, encoder;
if (kind === 'hf') {
  let tokenizer;
  load = median(() => {
    const json = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    tokenizer = new Tokenizer(json, config);
  });
  encode = (s) => tokenizer.encode(s, { add_special_tokens: false }).ids.length;
  encoder = '@huggingface/tokenizers';
} else {
  const options = { allowedSpecial: new Set(), disallowedSpecial: new Set() };
  encode = (s) => r50kEncode(s, options).length;
  encoder = 'gpt-tokenizer r50k_base';
}
const text = readFileSync(file, 'utf8');
const bytes = Buffer.byteLength(text, 'utf8');
const lines = text.split(/(?<=\n)/);
let tokens = 0, lineTokens = 0;
const whole = median(() => { tokens = encode(text); });
const byLine = median(() => { lineTokens = 0; for (const line of lines) lineTokens += encode(line); });
console.log(JSON.stringify({ encoder, load_s: load, bytes, lines: lines.length, tokens, line_tokens: lineTokens,
  mb_per_s: bytes / 1e6 / whole, lines_mb_per_s: bytes / 1e6 / byLine }));
