// Generates vectors.json: strings and their GPT-2 token ids from the independent encoder gpt-tokenizer
// (r50k_base), plus each token's text as Hugging Face's tok.decode(t) gives it: the token's bytes (from
// gpt-3-encoder's encoder.json and GPT-2's byte-to-unicode map) decoded with U+FFFD for partial characters
// (TextDecoder's replacement follows the same maximal-subpart rule as Python's errors="replace").
// gpt-tokenizer's own decode([id]) buffers partial characters instead, so it is not used for pieces.
// Deterministic. Run: npm install gpt-tokenizer gpt-3-encoder && node make_vectors.mjs
// U+0085 and U+FEFF are left out: JavaScript's \s and GPT-2's reference (Python) regex disagree on them.
import { encode, decode } from 'gpt-tokenizer/encoding/r50k_base';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const encoderJson = JSON.parse(readFileSync(require.resolve('gpt-3-encoder/encoder.json'), 'utf8'));
const byteOf = new Map();
{
  let next = 256;
  for (let b = 0; b < 256; ++b) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    byteOf.set(String.fromCodePoint(printable ? b : next++), b);
  }
}
const tokenText = new Map();
for (const [token, id] of Object.entries(encoderJson)) {
  const bytes = Uint8Array.from([...token].map((ch) => byteOf.get(ch)));
  tokenText.set(id, new TextDecoder('utf-8').decode(bytes));
}

let seed = 12345;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (list) => list[Math.floor(random() * list.length)];

const prose = ['The quick brown fox jumps over the lazy dog.', 'It was the best of times, it was the worst of times.',
  'Call me Ishmael.', 'In his NBA career, KC Jones played', '. The Space Needle is located in', 'Hello, my name is also',
  'Paris is the capital of France, and Berlin is the capital of Germany.', 'She sells sea shells by the sea shore.'];
const words = ['apple', 'Banana', 'transformer', 'logit', 'lens', 'GPU', 'tokenization', 'internationalization', 'naïve',
  'café', 'résumé', 'Zürich', 'São Paulo', 'Москва', 'Ελλάδα', 'العربية', 'עברית', 'हिन्दी', '東京', '北京市', '한국어',
  'ありがとう', 'ไทย', 'emoji🙂', '👩‍💻', '🇫🇷', '🤖🤖', 'e\u0301', 'a\u0308o\u0308', 'Å', 'ß', 'İstanbul', 'ﬁ', '①②', '½', 'x²'];
const code = ['def f(x):\n    return x ** 2\n', 'for (int i = 0; i < n; ++i) { sum += a[i]; }', '#include <torch/torch.h>',
  'const x = {a: 1, "b": [2, 3]};', 'SELECT * FROM users WHERE id = 42;', '<div class="x">&amp;</div>', 'if (a && b || !c) {}',
  '\tindented\n\t\tmore', 'x=1;y=2\r\nz=3', '`backticks` and ~tildes~ ^carets^'];
const contractions = ["don't", "DON'T", "I'm", "I'M", "you're", "YOU'RE", "we've", "WE'VE", "she'll", "SHE'LL", "he'd", "HE'D",
  "it's", "IT'S", "can't", "'s", "'t", "o'clock", "rock 'n' roll", "''quoted''"];
const numbers = ['0', '7', '42', '123', '1234', '12345', '3.14159', '1,000,000', '2026-11-29', '+1 (555) 010-9999', '0x1F',
  '1e-5', '９９', '٣٤', '99 bottles', 'v1.2.3', '100%', '$5.00', '#1', 'A1B2C3'];
const spaces = [' ', '  ', '   ', '\t', '\n', '\n\n', ' \n ', '\t \t', '\r\n', '\u00a0', '\u3000', '\u2003', '    x', 'x    ',
  'a  b   c', ' \t\n', '\n\n\n\nend'];
const special = ['<|endoftext|>', 'text<|endoftext|>more', '<|endoftext|><|endoftext|>', '< |endoftext| >', '<|endof'];

const strings = new Set([...prose, ...words, ...code, ...contractions, ...numbers, ...spaces, ...special,
  'Hello world', ' Hello world', '', 'a', ' ', 'Ünïcödé 🙂 <script>alert(1)</script> & "quotes" ’curly’ 東京']);
const pools = [prose, words, code, contractions, numbers, spaces, special];
while (strings.size < 640) {
  const parts = [];
  const count = 1 + Math.floor(random() * 6);
  for (let i = 0; i < count; ++i) parts.push(pick(pick(pools)));
  const glue = pick(['', ' ', '  ', '\n', '\t', ', ']);
  strings.add(parts.join(glue));
}
const vectors = [...strings].map((text) => {
  const ids = encode(text, { allowedSpecial: new Set(), disallowedSpecial: new Set() });
  if (decode(ids) !== text) throw new Error(`gpt-tokenizer does not round-trip ${JSON.stringify(text)}`);
  return { text, ids, pieces: ids.map((id) => tokenText.get(id)) };
});
writeFileSync('vectors.json', JSON.stringify({ encoder: 'gpt-tokenizer r50k_base', vectors }, null, 0) + '\n');
console.log(`${vectors.length} vectors`);
