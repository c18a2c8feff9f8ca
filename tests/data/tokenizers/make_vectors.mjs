// Generates <name>.json for each test vocabulary: strings and their ids from Hugging Face's own JavaScript
// implementation (@huggingface/tokenizers), checked against a second one (@lenml/tokenizers, from transformers.js),
// and each token's text as decode([id]) gives it. Deterministic; the vocabularies come from setup.mjs.
// Run: npm ci && node setup.mjs && node make_vectors.mjs [vocabularies]
//
// For each string: `ids` is encode(text) as Hugging Face does by default (added tokens matched, the post-processor's
// BOS/EOS added); `plain` treats special tokens as text and adds none (Python's split_special_tokens=True,
// add_special_tokens=False; non-special added tokens are still matched); `decoded` is decode(plain) without
// clean_up_tokenization_spaces (the Rust library's decode).
import { Tokenizer } from '@huggingface/tokenizers';
import { TokenizerLoader } from '@lenml/tokenizers';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2] ?? 'vocabularies';
const vocabularies = { llama3: 'llama3', qwen3: 'qwen3', gemma3: 'gemma3', mistral: 'mistral',
  'mistral-metaspace': 'mistral-metaspace', gpt2: 'gpt2/json' };

let seed = 20261202;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
const pick = (list) => list[Math.floor(random() * list.length)];

const prose = ['The quick brown fox jumps over the lazy dog.', 'It was the best of times, it was the worst of times.',
  'Call me Ishmael.', 'In his NBA career, KC Jones played', '. The Space Needle is located in', 'Hello, my name is',
  'Paris is the capital of France, and Berlin is the capital of Germany.', 'She sells sea shells by the sea shore.',
  'Der schnelle braune Fuchs springt über den faulen Hund.', 'Le cœur a ses raisons que la raison ne connaît point.',
  'Съешь же ещё этих мягких французских булок, да выпей чаю.', 'Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.',
  'الثعلب البني السريع يقفز فوق الكلب الكسول.', 'השועל החום המהיר קופץ מעל הכלב העצלן.',
  'तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।', '敏捷的棕色狐狸跳过了懒狗。', '素早い茶色の狐がのろまな犬を飛び越える。',
  '빠른 갈색 여우가 게으른 개를 뛰어넘는다.', 'สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ', 'Con cáo nâu nhanh nhẹn nhảy qua con chó lười.',
  'Ṫhë qüïçk ƀröwñ fõx', 'Zażółć gęślą jaźń.', 'Iñtërnâtiônàlizætiøn'];
const words = ['apple', 'Banana', 'transformer', 'logit', 'lens', 'GPU', 'tokenization', 'internationalization', 'naïve',
  'café', 'résumé', 'Zürich', 'São Paulo', 'Москва', 'Ελλάδα', 'العربية', 'עברית', 'हिन्दी', '東京', '北京市', '한국어',
  'ありがとう', 'ไทย', 'emoji🙂', '👩‍💻', '🇫🇷', '🤖🤖', '👨‍👩‍👧‍👦', '🏳️‍🌈', '👍🏽', 'Å', 'ß', 'İstanbul', 'ﬁ', '①②', '½', 'x²',
  'ǅ', 'Ⅻ', 'µ', 'Ω', 'K', 'ſ', 'ǲ'];
const unnormalized = ['e\u0301', 'a\u0308o\u0308', 'A\u030a', 'n\u0303', '\u1100\u1161', 'Cafe\u0301', 'Å', 'Ω',
  '\u0065\u0301\u0301', 'q\u0307\u0323', '\u00c5\u0323'];
const rare = ['𠜎', '𪚥', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '\ue000', '\u{10ffff}', '\u0001', '\u007f', '\u200b', '\u2028', 'ꙮ', '𓀀', '🜁', '\u0000',
  'ᚠᛇᚻ', '⠓⠑⠇⠇⠕', '\ufffd', '\u00ad', '\u2060'];
const code = ['def f(x):\n    return x ** 2\n', 'for (int i = 0; i < n; ++i) { sum += a[i]; }', '#include <torch/torch.h>',
  'const x = {a: 1, "b": [2, 3]};', 'SELECT * FROM users WHERE id = 42;', '<div class="x">&amp;</div>', 'if (a && b || !c) {}',
  '\tindented\n\t\tmore', 'x=1;y=2\r\nz=3', '`backticks` and ~tildes~ ^carets^', 'fn main() {\n\tprintln!("{}", 1);\n}',
  '    return self.lm_head(x)', '$ ls -la | grep "\\.cpp$"', '{"key": [1, 2.5e-3, null]}', '// TODO: fix\n\n\n'];
const contractions = ["don't", "DON'T", "Don'T", "I'm", "I'M", "i'M", "you're", "YOU'RE", "You'Re", "we've", "WE'VE",
  "she'll", "SHE'LL", "She'Ll", "he'd", "HE'D", "it's", "IT'S", "It'S", "can't", "'s", "'S", "'t", "o'clock",
  "rock 'n' roll", "''quoted''", "’curly’ isn’t"];
const numbers = ['0', '7', '42', '123', '1234', '12345', '1234567', '3.14159', '1,000,000', '2026-12-02', '+1 (555) 010-9999',
  '0x1F', '1e-5', '９９', '٣٤', '१२३', '99 bottles', 'v1.2.3', '100%', '$5.00', '#1', 'A1B2C3', '0000000000', 'Ⅷ', '²³'];
const spaces = [' ', '  ', '   ', '\t', '\n', '\n\n', ' \n ', '\t \t', '\r\n', '\r\n\r\n', '\r', '\u00a0', '\u3000',
  '\u2003', '    x', 'x    ', 'a  b   c', ' \t\n', '\n\n\n\nend', '        ', '\t\t\t', ' \r\n  '];
const pools = [prose, words, unnormalized, rare, code, contractions, numbers, spaces];

function stringsFor(specials) {
  const asText = specials.slice(0, 4);
  const special = [...asText, ...asText.map((s) => `text${s}more`), asText.map((s) => ` ${s} `).join(''),
    `${asText[0] ?? ''}${asText[0] ?? ''}`, '< |endoftext| >', '<|endof', '<s>', '</s>', '<bos>', '<unk>', '<pad>'];
  const strings = new Set([...prose, ...words, ...unnormalized, ...rare, ...code, ...contractions, ...numbers,
    ...spaces, ...special, 'Hello world', ' Hello world', 'Hello', ' Hello', '', 'a', ' ',
    'Ünïcödé 🙂 <script>alert(1)</script> & "quotes" ’curly’ 東京']);
  const all = [...pools, special];
  while (strings.size < 1100) {
    const parts = [];
    const count = 1 + Math.floor(random() * 6);
    for (let i = 0; i < count; ++i) parts.push(pick(pick(all)));
    strings.add(parts.join(pick(['', ' ', '  ', '\n', '\t', ', ', '\r\n'])));
  }
  return [...strings];
}

const withoutSpecials = (json) => ({ ...json, added_tokens: json.added_tokens.filter((t) => !t.special) });

for (const [name, folder] of Object.entries(vocabularies)) {
  const json = JSON.parse(readFileSync(join(root, folder, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(root, folder, 'tokenizer_config.json'), 'utf8'));
  const reference = new Tokenizer(json, config);
  const referencePlain = new Tokenizer(withoutSpecials(json), config);
  const second = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: config });
  const secondPlain = TokenizerLoader.fromPreTrained({ tokenizerJSON: withoutSpecials(json), tokenizerConfig: config });
  const specials = json.added_tokens.filter((t) => t.special).map((t) => t.content);
  const disagreements = [];
  const vectors = stringsFor(specials).map((text) => {
    const ids = reference.encode(text, { add_special_tokens: true }).ids;
    const plain = referencePlain.encode(text, { add_special_tokens: false }).ids;
    const secondIds = second.encode(text, { add_special_tokens: true });
    const secondPlainIds = secondPlain.encode(text, { add_special_tokens: false });
    if (JSON.stringify(secondIds) !== JSON.stringify(ids) || JSON.stringify(secondPlainIds) !== JSON.stringify(plain))
      disagreements.push({ text, ids, plain, second: secondIds, second_plain: secondPlainIds });
    const decoded = plain.length ? reference.decode(plain, { clean_up_tokenization_spaces: false }) : '';
    return { text, ids, plain, decoded };
  });
  const seen = new Set();
  for (const v of vectors) for (const id of v.plain) seen.add(id);
  for (const t of json.added_tokens) seen.add(t.id);
  for (let id = 0; id < 300; ++id) seen.add(id);  // byte-fallback tokens (<0x00>..<0xFF>) and the first merges
  const pieces = [...seen].sort((a, b) => a - b).map((id) => [id, reference.decode([id], { clean_up_tokenization_spaces: false })]);
  writeFileSync(`${name}.json`, JSON.stringify({ reference: '@huggingface/tokenizers 0.2.0', second: '@lenml/tokenizers 3.7.2',
    vectors, pieces, disagreement_count: disagreements.length, disagreements: disagreements.slice(0, 3) }) + '\n');
  console.log(`${name}: ${vectors.length} strings, ${pieces.length} single-token decodes, ${disagreements.length} disagreements between the references`);
}
