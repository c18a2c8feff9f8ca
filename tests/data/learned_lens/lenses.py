#!/usr/bin/env python3
"""Learned lenses in the published formats, and their decoding, for the C++ round-trip tests.

Written independently of the C++, from the reference implementations' formats and math:
- tuned lens (AlignmentResearch/tuned-lens, tuned_lens/nn/lenses.py): a folder with config.json (TunedLensConfig's
  fields) and params.pt, torch.save of a ModuleList of num_hidden_layers nn.Linear(d, d) translators' state dict
  ({i}.weight, {i}.bias); translator i acts on hidden_states[i] (0: the embedding) as h + W h + b; the last block's
  output is decoded as it is; loading is ModuleList.load_state_dict (strict).
- Jacobian lens (anthropics/jacobian-lens, as published for neuronpedia): torch.save of {"J": {layer: fp16 [d, d]},
  "n_prompts", "source_layers", "d_model"}; block l's output h is decoded as unembed(J_l @ h).
The head is GPT-2's: LayerNorm(ln_f) then the tied unembedding (the default model).

Commands (Debian's python3-torch):
  lenses.py write-tuned DIR D LAYERS SEED DTYPE        random translators, DTYPE float32 or float16
  lenses.py write-jacobian FILE D LAYERS SEED
  lenses.py decode STREAM MODEL TUNED_DIR JACOBIAN OUT  STREAM: [layers + 1, tokens, d] (row 0 the embedding);
                                                        OUT: per-layer probabilities of both lenses
  lenses.py check-tuned DIR EXPECTED                    loads DIR as tuned-lens does; its parameters must equal
                                                        EXPECTED's (safetensors) exactly
"""
import json, sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'llama'))
from make_reference import read_safetensors, write_safetensors  # noqa: E402


@dataclass
class TunedLensConfig:  # the reference's fields, in its order
    base_model_name_or_path: str
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: Optional[str] = None
    unembed_hash: Optional[str] = None
    lens_type: str = 'linear_tuned_lens'


def translators(config):
    return torch.nn.ModuleList(
        [torch.nn.Linear(config.d_model, config.d_model, bias=config.bias) for _ in range(config.num_hidden_layers)])


def write_tuned(folder, d, layers, seed, dtype):
    torch.manual_seed(seed)
    config = TunedLensConfig('default', d, layers)
    lens = translators(config)
    with torch.no_grad():
        for t in lens:
            t.weight.normal_(0, 0.05)
            t.bias.normal_(0, 0.1)
    lens = lens.to(getattr(torch, dtype))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(lens.state_dict(), folder / 'params.pt')
    (folder / 'config.json').write_text(json.dumps(asdict(config)))


def load_tuned(folder):
    folder = Path(folder)
    config = TunedLensConfig(**json.loads((folder / 'config.json').read_text()))
    lens = translators(config)
    lens.load_state_dict(torch.load(folder / 'params.pt', map_location='cpu'))
    return config, lens.float()


def write_jacobian(path, d, layers, seed):
    torch.manual_seed(seed)
    J = {l: (torch.eye(d) + 0.05 * torch.randn(d, d)).half() for l in range(layers - 1)}
    torch.save({'J': J, 'n_prompts': 100, 'source_layers': list(range(layers - 1)), 'd_model': d}, path)


def decode(stream_path, model_path, tuned_dir, jacobian_path, out_path):
    stream = read_safetensors(stream_path)['stream']  # [layers + 1, tokens, d]
    w = read_safetensors(model_path)
    d = stream.shape[-1]

    def head(h):
        h = torch.nn.functional.layer_norm(h, (d,), w['transformer.ln_f.weight'], w['transformer.ln_f.bias'], 1e-5)
        return torch.softmax(h @ w['transformer.wte.weight'].T, -1)

    _, tuned = load_tuned(tuned_dir)
    jacobian = torch.load(jacobian_path, map_location='cpu')
    layers = stream.shape[0] - 1
    out = {}
    with torch.no_grad():
        for l in range(layers):
            h = stream[l + 1]  # block l's output = hidden_states[l + 1]
            last = l == layers - 1
            out[f'tuned.{l}'] = head(h if last else h + tuned[l + 1](h))
            out[f'jacobian.{l}'] = head(h if last else h @ jacobian['J'][l].float().T)
    write_safetensors(out_path, out)


def check_tuned(folder, expected_path):
    config, lens = load_tuned(folder)
    expected = read_safetensors(expected_path)
    state = lens.state_dict()
    if set(state) != set(expected):
        sys.exit(f'keys differ: {sorted(state)} vs {sorted(expected)}')
    for key, value in state.items():
        if not torch.equal(value, expected[key]):
            sys.exit(f'{key} differs by {(value - expected[key]).abs().max().item()}')
    print(f'ok: {len(state)} tensors of a {config.num_hidden_layers}-layer lens, {config.lens_type}')


if __name__ == '__main__':
    command, args = sys.argv[1], sys.argv[2:]
    if command == 'write-tuned':
        write_tuned(args[0], int(args[1]), int(args[2]), int(args[3]), args[4])
    elif command == 'write-jacobian':
        write_jacobian(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif command == 'decode':
        decode(*args)
    elif command == 'check-tuned':
        check_tuned(*args)
    else:
        sys.exit(f'unknown command {command}')
