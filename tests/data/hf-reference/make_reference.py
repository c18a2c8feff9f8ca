#!/usr/bin/env python3
"""Float64 NumPy GPT-2 with Hugging Face's semantics, for test references.

An independent check of the shared fixtures' GPT-2 references (the first of which were computed without
`attn.c_attn.bias`; the regenerated ones agree with this script within 3e-5): it recomputes them with Hugging
Face's semantics, from the same checkpoints and prompts.
Writes <fixture>.json (lens, delta lens, greedy tokens) and <fixture>.safetensors (hidden states).
Run with Debian's python3-numpy: python3 make_reference.py ../fixtures
"""
import json, struct, sys
from pathlib import Path
import numpy as np


def read_safetensors(path):
    data = Path(path).read_bytes()
    n = struct.unpack('<Q', data[:8])[0]
    out = {}
    for name, info in json.loads(data[8:8 + n]).items():
        if name == '__metadata__':
            continue
        begin, end = info['data_offsets']
        raw = data[8 + n + begin:8 + n + end]
        if info['dtype'] == 'BF16':
            array = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype={'F32': np.float32, 'BOOL': np.bool_}[info['dtype']])
        name = name[len('transformer.'):] if name.startswith('transformer.') else name
        out[name] = array.reshape(info['shape']).astype(np.float64)
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(array.shape), 'data_offsets': [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b' ' * ((8 - len(text) % 8) % 8)
    Path(path).write_bytes(struct.pack('<Q', len(text)) + text + b''.join(blobs))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(w, cfg, ids):
    """Returns the output of transformer.drop and of every block, and the logits."""
    T, C, H = len(ids), cfg['n_embd'], cfg['n_head']
    eps = cfg.get('layer_norm_epsilon', 1e-5)
    x = w['wte.weight'][ids] + w['wpe.weight'][:T]
    embed, hidden = x, []
    for layer in range(cfg['n_layer']):
        p = f'h.{layer}.'
        qkv = layer_norm(x, w[p + 'ln_1.weight'], w[p + 'ln_1.bias'], eps) @ w[p + 'attn.c_attn.weight'] + w[p + 'attn.c_attn.bias']
        q, k, v = [t.reshape(T, H, C // H).transpose(1, 0, 2) for t in np.split(qkv, 3, -1)]
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(C // H) + np.triu(np.full((T, T), -np.inf), 1)
        y = (softmax(scores) @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + y @ w[p + 'attn.c_proj.weight'] + w[p + 'attn.c_proj.bias']
        h = layer_norm(x, w[p + 'ln_2.weight'], w[p + 'ln_2.bias'], eps)
        x = x + gelu_new(h @ w[p + 'mlp.c_fc.weight'] + w[p + 'mlp.c_fc.bias']) @ w[p + 'mlp.c_proj.weight'] + w[p + 'mlp.c_proj.bias']
        hidden.append(x)
    unembed = w.get('lm_head.weight', w['wte.weight'])
    logits = layer_norm(x, w['ln_f.weight'], w['ln_f.bias'], eps) @ unembed.T
    return embed, np.stack(hidden), logits, unembed


def lens(w, cfg, states, unembed, k=5):
    probs = softmax(layer_norm(states, w['ln_f.weight'], w['ln_f.bias'], cfg.get('layer_norm_epsilon', 1e-5)) @ unembed.T)
    top = np.argsort(-probs, axis=-1, kind='stable')[..., :k]
    magnitudes = np.linalg.norm(states, axis=-1)
    magnitudes = magnitudes / (magnitudes[:, 1:].max() if states.shape[1] > 1 else magnitudes.max())
    return {'tokens': top.tolist(), 'probs': np.take_along_axis(probs, top, -1).tolist(), 'magnitudes': magnitudes.tolist()}


def main(fixtures):
    fixtures = Path(fixtures)
    prompts = json.loads((fixtures / 'prompts.json').read_text())
    for name in ['gpt2-tiny', 'gpt2-tiny-prefixed-bf16']:
        cfg = json.loads((fixtures / name / 'config.json').read_text())
        w = read_safetensors(fixtures / name / 'model.safetensors')
        results, tensors = [], {}
        for i, prompt in enumerate(prompts):
            ids = prompt['ids']
            embed, hidden, logits, unembed = forward(w, cfg, ids)
            states = np.concatenate([embed[None], hidden])
            generated, sequence = [], list(ids)
            for _ in range(10):
                token = int(np.argmax(forward(w, cfg, sequence)[2][-1]))
                generated.append(token)
                sequence.append(token)
            results.append({'ids': ids, 'lens': lens(w, cfg, hidden, unembed), 'delta_lens': lens(w, cfg, states[1:] - states[:-1], unembed),
                            'generated': generated})
            tensors[f'p{i}.hidden'] = hidden
            tensors[f'p{i}.embed'] = embed
            tensors[f'p{i}.logits_last'] = logits[-1]
        Path(f'{name}.json').write_text(json.dumps({'prompts': results}) + '\n')
        write_safetensors(f'{name}.safetensors', tensors)
        print(name, 'done')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else '../fixtures')
