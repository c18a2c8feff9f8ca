#!/usr/bin/env python3
"""Float32 references for the Llama-architecture fixtures, with Hugging Face's semantics.

A transcription of Hugging Face's forward for LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and
Qwen3ForCausalLM (modeling_llama.py, modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py; rotary frequencies
from modeling_rope_utils.py), written independently of the C++ and run on the checkpoint files as written
(BF16 weights upcast to float32). Uses Debian's python3-torch for tensor arithmetic only.

Writes <fixture>.json (per prompt: lens and delta lens top-5, 10 greedy tokens, the left-padded batch's greedy
tokens, checkpoint checksums) and <fixture>.safetensors (hidden states; the last position's 64 largest logits are in the JSON), plus rope.json (inverse frequencies of
every rope_scaling type).
Run with Debian's Python (python3-torch): /usr/bin/python3 make_reference.py <fixtures folder written by the ctest fixture llama_fixtures_setup>
"""
import hashlib, json, math, struct, sys
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent


def read_safetensors(path):
    data = Path(path).read_bytes()
    n = struct.unpack('<Q', data[:8])[0]
    out = {}
    for name, info in json.loads(data[8:8 + n]).items():
        if name == '__metadata__':
            continue
        begin, end = info['data_offsets']
        raw = bytearray(data[8 + n + begin:8 + n + end])
        if info['dtype'] == 'BF16':
            t = torch.frombuffer(raw, dtype=torch.int16).to(torch.int32) << 16
            t = t.view(torch.float32)
        else:
            t = torch.frombuffer(raw, dtype={'F32': torch.float32, 'F16': torch.float16}[info['dtype']]).float()
        out[name] = t.reshape(info['shape']).clone()
    return out


def read_weights(folder):
    index = folder / 'model.safetensors.index.json'
    files = sorted(set(json.loads(index.read_text())['weight_map'].values())) if index.exists() else ['model.safetensors']
    w = {}
    for f in files:
        w.update(read_safetensors(folder / f))
    return w, {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in files}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        blob = t.contiguous().float().numpy().tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b' ' * ((8 - len(text) % 8) % 8)
    Path(path).write_bytes(struct.pack('<Q', len(text)) + text + b''.join(blobs))


# --- modeling_rope_utils.py ---------------------------------------------------------------------------------
def rope_parameters(cfg, seq_len=None):
    """(inv_freq, attention_scaling) as ROPE_INIT_FUNCTIONS compute them."""
    base = cfg.get('rope_theta', 10000.0)
    head_dim = cfg.get('head_dim') or cfg['hidden_size'] // cfg['num_attention_heads']
    dim = int(head_dim * cfg.get('partial_rotary_factor', 1.0))
    scaling = cfg.get('rope_scaling') or {}
    kind = scaling.get('rope_type', scaling.get('type', 'default'))

    def default(b):
        return 1.0 / (b ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))

    if kind == 'default':
        return default(base), 1.0
    factor = scaling.get('factor')
    if kind == 'linear':
        return default(base) / factor, 1.0
    if kind == 'dynamic':
        max_pos = cfg['max_position_embeddings']
        seq_len = seq_len if seq_len is not None and seq_len > max_pos else max_pos
        b = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        return default(b), 1.0
    if kind == 'llama3':
        inv_freq = default(base)
        low, high = scaling['low_freq_factor'], scaling['high_freq_factor']
        old = scaling['original_max_position_embeddings']
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, inv_freq_llama), 1.0
    if kind == 'yarn':
        original = scaling.get('original_max_position_embeddings') or cfg['max_position_embeddings']
        if factor is None:
            factor = cfg['max_position_embeddings'] / original
        mscale, mscale_all_dim = scaling.get('mscale'), scaling.get('mscale_all_dim')

        def get_mscale(scale, m=1):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        attention = scaling.get('attention_factor')
        if attention is None:
            attention = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) if mscale and mscale_all_dim \
                else get_mscale(factor)
        beta_fast, beta_slow = scaling.get('beta_fast') or 32, scaling.get('beta_slow') or 1

        def correction_dim(rotations):
            return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

        lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
        if scaling.get('truncate', True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, dim - 1)
        if lo == hi:
            hi += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo), 0, 1)
        pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
        extrapolation_factor = 1 - ramp
        inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1.0 / pos_freqs) * extrapolation_factor
        return inv, float(attention)
    raise ValueError(kind)


# --- modeling_llama.py and relatives --------------------------------------------------------------------------
def rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def forward(w, cfg, ids, attention_mask=None):
    """Hidden states (embedding and every layer's output, [layers + 1, batch, T, C]) and logits, for ids
    [batch, T]; positions from the attention mask as generate() computes them (cumsum - 1)."""
    kind = cfg['model_type']
    B, T = ids.shape
    H, C = cfg['num_attention_heads'], cfg['hidden_size']
    KV = cfg.get('num_key_value_heads') or H
    D = cfg.get('head_dim') or C // H
    eps = cfg['rms_norm_eps']
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.long)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inv_freq, attention_scaling = rope_parameters(cfg, int(position_ids.max()) + 1)
    freqs = position_ids[:, :, None].float() * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = (emb.cos() * attention_scaling)[:, None], (emb.sin() * attention_scaling)[:, None]
    rd = inv_freq.shape[0] * 2

    # Causal mask, padding and (per layer) sliding window: key j visible to query i iff j <= i, j is a token,
    # and i - j < window (kv_idx > q_idx - sliding_window).
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    visible = (j <= i)[None] & attention_mask[:, None, :].bool()
    layer_types = cfg.get('layer_types')
    if layer_types is None:  # the configs' defaults (MistralConfig, Qwen2Config, Qwen3Config)
        window = cfg.get('sliding_window')
        if kind == 'mistral':
            layer_types = ['sliding_attention' if window is not None else 'full_attention'] * cfg['num_hidden_layers']
        else:
            layer_types = ['sliding_attention' if kind in ('qwen2', 'qwen3') and cfg.get('use_sliding_window')
                           and window is not None and i >= cfg.get('max_window_layers', 28) else 'full_attention'
                           for i in range(cfg['num_hidden_layers'])]

    x = w['model.embed_tokens.weight'][ids]
    states = [x]
    for layer in range(cfg['num_hidden_layers']):
        p = f'model.layers.{layer}.'
        h = rms_norm(x, w[p + 'input_layernorm.weight'], eps)

        def proj(name, t):
            y = t @ w[p + name + '.weight'].T
            return y + w[p + name + '.bias'] if p + name + '.bias' in w else y

        q = proj('self_attn.q_proj', h).view(B, T, H, D).transpose(1, 2)
        k = proj('self_attn.k_proj', h).view(B, T, KV, D).transpose(1, 2)
        v = proj('self_attn.v_proj', h).view(B, T, KV, D).transpose(1, 2)
        if kind == 'qwen3':
            q = rms_norm(q, w[p + 'self_attn.q_norm.weight'], eps)
            k = rms_norm(k, w[p + 'self_attn.k_norm.weight'], eps)
        q = torch.cat((q[..., :rd] * cos + rotate_half(q[..., :rd]) * sin, q[..., rd:]), -1)
        k = torch.cat((k[..., :rd] * cos + rotate_half(k[..., :rd]) * sin, k[..., rd:]), -1)
        k = k[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)  # repeat_kv
        v = v[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)
        allowed = visible
        if layer_types[layer] == 'sliding_attention':
            allowed = allowed & ((i - j) < cfg['sliding_window'])[None]
        scores = (q @ k.transpose(2, 3)) * D ** -0.5
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
        y = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + proj('self_attn.o_proj', y)
        h = rms_norm(x, w[p + 'post_attention_layernorm.weight'], eps)
        act = torch.nn.functional.silu(proj('mlp.gate_proj', h))
        x = x + proj('mlp.down_proj', act * proj('mlp.up_proj', h))
        states.append(x)
    unembed = w.get('lm_head.weight', w['model.embed_tokens.weight'])
    logits = rms_norm(x, w['model.norm.weight'], eps) @ unembed.T
    return torch.stack(states), logits, unembed


def lens(w, cfg, states, unembed, k=5):
    probs = torch.softmax(rms_norm(states, w['model.norm.weight'], cfg['rms_norm_eps']) @ unembed.T, -1)
    top = torch.sort(probs, dim=-1, descending=True, stable=True)[1][..., :k]
    magnitudes = states.norm(dim=-1)
    magnitudes = magnitudes / (magnitudes[:, 1:].max() if states.shape[1] > 1 else magnitudes.max())
    return {'tokens': top.tolist(), 'probs': torch.gather(probs, -1, top).tolist(), 'magnitudes': magnitudes.tolist()}


def greedy(w, cfg, ids, steps=10, forward=forward):
    seq = list(ids)
    for _ in range(steps):
        seq.append(int(forward(w, cfg, torch.tensor([seq]))[1][0, -1].argmax()))
    return seq[len(ids):]


def greedy_batch(w, cfg, prompts, pad, steps=10, forward=forward):
    """Left-padded batch, one forward per step over the whole sequences."""
    seqs = [list(p) for p in prompts]
    for _ in range(steps):
        longest = max(len(s) for s in seqs)
        ids = torch.tensor([[pad] * (longest - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs])
        logits = forward(w, cfg, ids, mask)[1]
        for s, row in zip(seqs, logits[:, -1]):
            s.append(int(row.argmax()))
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def main(root):
    root = Path(root)
    spec = json.loads((HERE / 'fixtures.json').read_text())
    prompts = json.loads((HERE / 'prompts.json').read_text())
    torch.set_grad_enabled(False)
    for fixture in spec['fixtures']:
        name = fixture['name']
        folder = root / name
        cfg = json.loads((folder / 'config.json').read_text())
        w, checksums = read_weights(folder)
        results, tensors = [], {}
        for n, prompt in enumerate(prompts[name]):
            ids = prompt['ids']
            states, logits, unembed = forward(w, cfg, torch.tensor([ids]))
            states = states[:, 0]
            hidden = states[1:]
            last_values, last_ids = logits[0, -1].topk(64)
            results.append({'text': prompt['text'], 'ids': ids, 'lens': lens(w, cfg, hidden, unembed),
                            'delta_lens': lens(w, cfg, states[1:] - states[:-1], unembed),
                            'generated': greedy(w, cfg, ids),
                            'logits_last_top64': {'ids': last_ids.tolist(), 'values': last_values.tolist()}})
            tensors[f'p{n}.hidden'] = hidden
            tensors[f'p{n}.embed'] = states[0]
        batch = greedy_batch(w, cfg, [p['ids'] for p in prompts[name]], pad=0)
        (HERE / f'{name}.json').write_text(json.dumps({'checksums': checksums, 'prompts': results,
                                                       'batch_generated': batch}) + '\n')
        write_safetensors(HERE / f'{name}.safetensors', tensors)
        print(name, 'done')
    # Inverse frequencies of every rope_scaling type, for a 64-wide head.
    base = {'hidden_size': 512, 'num_attention_heads': 8, 'rope_theta': 500000.0, 'max_position_embeddings': 4096}
    cases = {
        'default': {}, 'partial': {'partial_rotary_factor': 0.25},
        'linear': {'rope_scaling': {'rope_type': 'linear', 'factor': 4.0}},
        'dynamic_short': {'rope_scaling': {'type': 'dynamic', 'factor': 2.0}, 'seq_len': 100},
        'dynamic_long': {'rope_scaling': {'type': 'dynamic', 'factor': 2.0}, 'seq_len': 10000},
        'llama3': {'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0,
                                    'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}},
        'yarn': {'rope_scaling': {'rope_type': 'yarn', 'factor': 4.0, 'original_max_position_embeddings': 1024}},
        'yarn_implicit_factor': {'rope_scaling': {'rope_type': 'yarn', 'original_max_position_embeddings': 512}},
        'yarn_mscale': {'rope_scaling': {'rope_type': 'yarn', 'factor': 40.0, 'mscale': 1.0, 'mscale_all_dim': 0.7,
                                         'beta_fast': 16, 'beta_slow': 2, 'original_max_position_embeddings': 1024}},
    }
    rope = {}
    for case, extra in cases.items():
        cfg = dict(base, **{k: v for k, v in extra.items() if k != 'seq_len'})
        inv, attention = rope_parameters(cfg, extra.get('seq_len'))
        rope[case] = {'config': cfg, 'seq_len': extra.get('seq_len'), 'inv_freq': inv.tolist(),
                      'attention_factor': attention}
    (HERE / 'rope.json').write_text(json.dumps(rope, indent=1) + '\n')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else '../../../build/llama-fixtures')
