// Writes prompts.json: each fixture's prompts (fixtures.json) and their ids as Hugging Face encodes them by default
// (BOS where the tokenizer adds one), from @huggingface/tokenizers. The C++ tests check that baukit's tokenizer
// gives the same ids. Run: node prompts.mjs <vocabularies folder> (build/tokenizers/vocabularies)
import { Tokenizer } from '@huggingface/tokenizers';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const vocabularies = process.argv[2];
const spec = JSON.parse(readFileSync(new URL('fixtures.json', import.meta.url)));
const out = {};
for (const fixture of spec.fixtures) {
  const dir = join(vocabularies, fixture.tokenizer);
  const tokenizer = new Tokenizer(JSON.parse(readFileSync(join(dir, 'tokenizer.json'))),
    JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'))));
  out[fixture.name] = spec.prompts.map((text) => ({ text, ids: tokenizer.encode(text, { add_special_tokens: true }).ids }));
}
writeFileSync(new URL('prompts.json', import.meta.url), JSON.stringify(out, null, 1) + '\n');
