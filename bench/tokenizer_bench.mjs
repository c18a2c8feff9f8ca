// gpt-tokenizer (r50k_base) throughput on the same text as bench-tokenizer: median of 5 after a warm-up.
import { encode } from 'gpt-tokenizer/encoding/r50k_base';
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2], 'utf8');
const bytes = Buffer.byteLength(text, 'utf8');
// Special tokens are plain text here, as in baukit-cpp's default encode.
const options = { allowedSpecial: new Set(), disallowedSpecial: new Set() };
let tokens = encode(text, options).length;
const times = [];
for (let i = 0; i < 5; ++i) {
  const start = process.hrtime.bigint();
  tokens = encode(text, options).length;
  times.push(Number(process.hrtime.bigint() - start) / 1e9);
}
times.sort((a, b) => a - b);
const seconds = times[2];
console.log(JSON.stringify({ encoder: 'gpt-tokenizer r50k_base', bytes, tokens, seconds, mb_per_s: bytes / seconds / 1e6 }));
