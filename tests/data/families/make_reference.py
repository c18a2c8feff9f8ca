#!/usr/bin/env python3
"""Float32 references for the Gemma 2, Gemma 3 and GPT-NeoX fixtures, with Hugging Face's semantics.

A transcription of Hugging Face's forward for Gemma2ForCausalLM, Gemma3ForCausalLM (text) and GPTNeoXForCausalLM
(modeling_gemma2.py, modeling_gemma3.py, modeling_gpt_neox.py; rotary frequencies from modeling_rope_utils.py),
written independently of the C++ and run on the checkpoint files as written (BF16/F16 weights upcast to float32).
File handling, rope_parameters and the greedy loops come from ../llama/make_reference.py. Uses Debian's
python3-torch for tensor arithmetic only.

Semantics it fixes:
- Gemma: RMSNorm scales by (1 + weight) in float32; the embedding is multiplied by sqrt(hidden_size) rounded to the
  checkpoint's dtype (torch_dtype), as Hugging Face computes the normalizer in the model's dtype; GeGLU with tanh
  GELU; the four norms of a layer; scores scaled by query_pre_attn_scalar**-0.5, soft-capped (Gemma 2) before the
  mask; a sliding layer's query sees sliding_window keys including itself; Gemma 3 norms each query and key head and
  turns sliding layers with rope_local_base_freq (unscaled), global ones with rope_theta and rope_scaling; Gemma 2's
  logits are soft-capped after lm_head, and so is every lens row.
- GPT-NeoX: query_key_value is laid out [heads, 3 * head_size] per token; the first int(head_size * rotary_pct)
  dimensions of q and k turn (rotate-half); parallel residual x + attn(ln1(x)) + mlp(ln2(x)), or sequential.

Writes <fixture>.json and <fixture>.safetensors as ../llama/make_reference.py does.
Run with Debian's Python (python3-torch):
  /usr/bin/python3 make_reference.py <fixtures folder written by the ctest fixture families_fixtures_setup>
"""
import json, math, sys
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'llama'))
from make_reference import (greedy, greedy_batch, read_weights, rope_parameters, rotate_half,  # noqa: E402
                            write_safetensors)

DTYPES = {'bfloat16': torch.bfloat16, 'float16': torch.float16, 'float32': torch.float32}


def causal_visibility(mask):
    """[B, T, T]: key j visible to query i iff j <= i and j is a token."""
    T = mask.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    return (j <= i)[None] & mask[:, None, :].bool(), i, j


def rotary(inv_freq, attention_scaling, position_ids):
    freqs = position_ids[:, :, None].float() * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling)[:, None], (emb.sin() * attention_scaling)[:, None]


def turn(x, cos, sin):
    rd = cos.shape[-1]
    return torch.cat((x[..., :rd] * cos + rotate_half(x[..., :rd]) * sin, x[..., rd:]), -1)


def projection(w, prefix):
    """t -> t @ W.T (+ b) for the Linear named prefix + name."""
    def proj(name, t):
        y = t @ w[prefix + name + '.weight'].T
        return y + w[prefix + name + '.bias'] if prefix + name + '.bias' in w else y
    return proj


def attend(q, k, v, allowed, scaling, softcap=None):
    scores = (q @ k.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    return torch.softmax(scores, -1) @ v


# --- modeling_gemma2.py, modeling_gemma3.py -------------------------------------------------------------------
def gemma_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + weight)


def gemma_layer_types(cfg):
    if cfg.get('layer_types'):
        return cfg['layer_types']
    pattern = cfg.get('sliding_window_pattern', 6 if cfg['model_type'] == 'gemma3_text' else 2)
    return ['sliding_attention' if (i + 1) % pattern else 'full_attention' for i in range(cfg['num_hidden_layers'])]


def gemma_head(w, cfg):
    unembed = w.get('lm_head.weight', w['model.embed_tokens.weight'])
    cap = cfg.get('final_logit_softcapping')

    def head(states):
        logits = gemma_norm(states, w['model.norm.weight'], cfg['rms_norm_eps']) @ unembed.T
        return torch.tanh(logits / cap) * cap if cap is not None else logits
    return head


def gemma_forward(w, cfg, ids, attention_mask=None):
    gemma3 = cfg['model_type'] == 'gemma3_text'
    B, T = ids.shape
    H, KV, D, C = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim'], cfg['hidden_size']
    eps = cfg['rms_norm_eps']
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.long)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    angles = {'full_attention': rotary(*rope_parameters(cfg), position_ids)}
    local = dict(cfg, rope_theta=cfg['rope_local_base_freq'], rope_scaling=None) if gemma3 else cfg
    angles['sliding_attention'] = rotary(*rope_parameters(local), position_ids)
    visible, i, j = causal_visibility(attention_mask)
    types = gemma_layer_types(cfg)

    normalizer = torch.tensor(C ** 0.5, dtype=DTYPES[cfg.get('torch_dtype', 'float32')]).float()
    x = w['model.embed_tokens.weight'][ids] * normalizer
    states = [x]
    for layer in range(cfg['num_hidden_layers']):
        p = f'model.layers.{layer}.'
        proj = projection(w, p)
        h = gemma_norm(x, w[p + 'input_layernorm.weight'], eps)
        q = proj('self_attn.q_proj', h).view(B, T, H, D).transpose(1, 2)
        k = proj('self_attn.k_proj', h).view(B, T, KV, D).transpose(1, 2)
        v = proj('self_attn.v_proj', h).view(B, T, KV, D).transpose(1, 2)
        if gemma3:
            q = gemma_norm(q, w[p + 'self_attn.q_norm.weight'], eps)
            k = gemma_norm(k, w[p + 'self_attn.k_norm.weight'], eps)
        cos, sin = angles[types[layer]]
        q, k = turn(q, cos, sin), turn(k, cos, sin)
        k = k[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)
        v = v[:, :, None].expand(B, KV, H // KV, T, D).reshape(B, H, T, D)
        allowed = visible
        if types[layer] == 'sliding_attention':
            allowed = allowed & ((i - j) < cfg['sliding_window'])[None]
        y = attend(q, k, v, allowed, cfg['query_pre_attn_scalar'] ** -0.5, cfg.get('attn_logit_softcapping'))
        y = proj('self_attn.o_proj', y.transpose(1, 2).reshape(B, T, H * D))
        x = x + gemma_norm(y, w[p + 'post_attention_layernorm.weight'], eps)
        h = gemma_norm(x, w[p + 'pre_feedforward_layernorm.weight'], eps)
        m = proj('mlp.down_proj', torch.nn.functional.gelu(proj('mlp.gate_proj', h), approximate='tanh')
                 * proj('mlp.up_proj', h))
        x = x + gemma_norm(m, w[p + 'post_feedforward_layernorm.weight'], eps)
        states.append(x)
    return torch.stack(states), gemma_head(w, cfg)(x)


# --- modeling_gpt_neox.py -------------------------------------------------------------------------------------
def layer_norm(x, w, name, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], w[name + '.weight'], w[name + '.bias'], eps)


def neox_head(w, cfg):
    unembed = w.get('embed_out.weight', w['gpt_neox.embed_in.weight'])
    return lambda states: layer_norm(states, w, 'gpt_neox.final_layer_norm', cfg['layer_norm_eps']) @ unembed.T


def neox_forward(w, cfg, ids, attention_mask=None):
    B, T = ids.shape
    H, C = cfg['num_attention_heads'], cfg['hidden_size']
    D = C // H
    eps = cfg['layer_norm_eps']
    if attention_mask is None:
        attention_mask = torch.ones(B, T, dtype=torch.long)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    rope_cfg = dict(cfg, rope_theta=cfg['rotary_emb_base'], partial_rotary_factor=cfg['rotary_pct'])
    cos, sin = rotary(*rope_parameters(rope_cfg), position_ids)
    visible, _, _ = causal_visibility(attention_mask)

    x = w['gpt_neox.embed_in.weight'][ids]
    states = [x]
    for layer in range(cfg['num_hidden_layers']):
        p = f'gpt_neox.layers.{layer}.'
        proj = projection(w, p)
        qkv = proj('attention.query_key_value', layer_norm(x, w, p + 'input_layernorm', eps))
        q, k, v = qkv.view(B, T, H, 3 * D).transpose(1, 2).chunk(3, dim=-1)
        q, k = turn(q, cos, sin), turn(k, cos, sin)
        y = attend(q, k, v, visible, D ** -0.5)
        attn = proj('attention.dense', y.transpose(1, 2).reshape(B, T, C))

        def mlp(t):
            return proj('mlp.dense_4h_to_h', torch.nn.functional.gelu(proj('mlp.dense_h_to_4h', t)))

        if cfg['use_parallel_residual']:
            x = x + attn + mlp(layer_norm(x, w, p + 'post_attention_layernorm', eps))
        else:
            x = x + attn
            x = x + mlp(layer_norm(x, w, p + 'post_attention_layernorm', eps))
        states.append(x)
    return torch.stack(states), neox_head(w, cfg)(x)


FAMILIES = {'gemma2': (gemma_forward, gemma_head), 'gemma3_text': (gemma_forward, gemma_head),
            'gpt_neox': (neox_forward, neox_head)}


# --- what the fixtures record (as ../llama/make_reference.py) -------------------------------------------------
def lens(head, states, k=5):
    probs = torch.softmax(head(states), -1)
    top = torch.sort(probs, dim=-1, descending=True, stable=True)[1][..., :k]
    magnitudes = states.norm(dim=-1)
    magnitudes = magnitudes / (magnitudes[:, 1:].max() if states.shape[1] > 1 else magnitudes.max())
    return {'tokens': top.tolist(), 'probs': torch.gather(probs, -1, top).tolist(), 'magnitudes': magnitudes.tolist()}


def main(root):
    root = Path(root)
    spec = json.loads((HERE / 'fixtures.json').read_text())
    prompts = json.loads((HERE / 'prompts.json').read_text())
    torch.set_grad_enabled(False)
    for fixture in spec['fixtures']:
        name = fixture['name']
        folder = root / name
        cfg = json.loads((folder / 'config.json').read_text())
        forward, make_head = FAMILIES[cfg['model_type']]
        w, checksums = read_weights(folder)
        head = make_head(w, cfg)
        results, tensors = [], {}
        for n, prompt in enumerate(prompts[name]):
            ids = prompt['ids']
            states, logits = forward(w, cfg, torch.tensor([ids]))
            states = states[:, 0]
            hidden = states[1:]
            if cfg.get('final_logit_softcapping') is not None:  # the cap must visibly change the lens
                plain = dict(cfg, final_logit_softcapping=None)
                change = (torch.softmax(head(hidden), -1) - torch.softmax(make_head(w, plain)(hidden), -1)).abs().max()
                assert change > 1e-2, f'{name}: the final soft cap changes lens probabilities by only {change}'
            last_values, last_ids = logits[0, -1].topk(64)
            results.append({'text': prompt['text'], 'ids': ids, 'lens': lens(head, hidden),
                            'delta_lens': lens(head, states[1:] - states[:-1]),
                            'generated': greedy(w, cfg, ids, forward=forward),
                            'logits_last_top64': {'ids': last_ids.tolist(), 'values': last_values.tolist()}})
            tensors[f'p{n}.hidden'] = hidden
            tensors[f'p{n}.embed'] = states[0]
        batch = greedy_batch(w, cfg, [p['ids'] for p in prompts[name]], pad=0, forward=forward)
        (HERE / f'{name}.json').write_text(json.dumps({'checksums': checksums, 'prompts': results,
                                                       'batch_generated': batch}) + '\n')
        write_safetensors(HERE / f'{name}.safetensors', tensors)
        print(name, 'done')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else '../../../build/families-fixtures')
