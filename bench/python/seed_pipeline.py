#!/usr/bin/python3
"""The seed notebook's pipeline in PyTorch (Debian's python3-torch), for the side-by-side benchmark only.

GPT-2 with Hugging Face's math and module names (Conv1D, gelu_new, the causal mask buffer, tuple block outputs),
forward hooks on `transformer.drop` and `transformer.h.N`, the decoder `Sequential(ln_f, lm_head, Softmax)`,
top-k, magnitudes, and the seed's HTML grid for the lens and the delta lens.

  --load seed   as the notebook's from_pretrained(low_cpu_mem_usage=False) does: build the model with its random
                initialisation, read every tensor of model.safetensors into memory, copy them in with
                load_state_dict.
  --load fast   the fastest loading PyTorch offers: parameters created on the meta device (no initialisation,
                no memory), then replaced by zero-copy views of the memory-mapped file.

  lens:     seed_pipeline.py lens --model DIR --ids 1,2,3 --load seed --out page.html --json top1.json
  generate: seed_pipeline.py generate --model DIR --ids 1,2,3 --new-tokens 100 --load fast

Prints one JSON line with the seconds of each phase (import, load, forward, decode, page / generate).
"""
import argparse
import html
import json
import math
import mmap
import struct
import time

started = time.perf_counter()
import torch  # noqa: E402
from torch import nn  # noqa: E402

imported = time.perf_counter()


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: weight [in, out]."""

    def __init__(self, nf, nx, device=None):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf, device=device))
        self.bias = nn.Parameter(torch.zeros(nf, device=device))
        if device != "meta":
            nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        n = c["n_positions"]
        self.register_buffer("bias", torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n), persistent=False)
        self.n_head, self.head_dim = c["n_head"], c["n_embd"] // c["n_head"]
        self.c_attn = Conv1D(3 * c["n_embd"], c["n_embd"], device)
        self.c_proj = Conv1D(c["n_embd"], c["n_embd"], device)
        self.attn_dropout = nn.Dropout(0.1)
        self.resid_dropout = nn.Dropout(0.1)

    def split(self, t):
        return t.view(t.size()[:-1] + (self.n_head, self.head_dim)).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = (self.split(t) for t in self.c_attn(x).split(x.size(-1), dim=2))
        w = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5, dtype=q.dtype)
        t = q.size(-2)
        w = torch.where(self.bias[:, :, :t, :t], w, torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype))
        w = self.attn_dropout(nn.functional.softmax(w, dim=-1))
        y = torch.matmul(w, v).permute(0, 2, 1, 3).contiguous()
        return self.resid_dropout(self.c_proj(y.view(y.size()[:-2] + (x.size(-1),))))


class GPT2MLP(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        inner = c.get("n_inner") or 4 * c["n_embd"]
        self.c_fc = Conv1D(inner, c["n_embd"], device)
        self.c_proj = Conv1D(c["n_embd"], inner, device)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.c_proj(gelu_new(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        eps = c.get("layer_norm_epsilon", 1e-5)
        self.ln_1 = nn.LayerNorm(c["n_embd"], eps=eps, device=device)
        self.attn = GPT2Attention(c, device)
        self.ln_2 = nn.LayerNorm(c["n_embd"], eps=eps, device=device)
        self.mlp = GPT2MLP(c, device)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return (x,)  # Hugging Face's blocks return a tuple: the seed takes .output[0]


class GPT2Model(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        self.wte = nn.Embedding(c["vocab_size"], c["n_embd"], device=device)
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"], device=device)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList([GPT2Block(c, device) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=c.get("layer_norm_epsilon", 1e-5), device=device)

    def forward(self, ids):
        x = self.drop(self.wte(ids) + self.wpe(torch.arange(ids.size(-1))[None]))
        for block in self.h:
            x = block(x)[0]
        return self.ln_f(x)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        self.transformer = GPT2Model(c, device)
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False, device=device)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as Hugging Face does

    def forward(self, ids):
        return {"logits": self.lm_head(self.transformer(ids))}


DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def safetensors_views(path):
    """name -> tensor viewing the memory-mapped file (copy-on-write mapping: no bytes are read until used)."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    (n,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        count = (end - begin) // torch.tensor([], dtype=dtype).element_size()
        out[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=8 + n + begin).view(info["shape"])
    return out


def hf_name(name):
    return name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name


def load(directory, mode):
    with open(f"{directory}/config.json") as f:
        config = json.load(f)
    if mode == "seed":
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)  # random initialisation of every module, as the constructors do
        # Every tensor read into its own memory (safetensors.torch.load_file), then copied in.
        state = {hf_name(k): v.to(torch.float32, copy=True) for k, v in safetensors_views(f"{directory}/model.safetensors").items()}
        result = model.load_state_dict(state, strict=False)
        assert set(result.missing_keys) <= {"lm_head.weight"}, result.missing_keys
        assert all(k.endswith(("attn.bias", "attn.masked_bias")) for k in result.unexpected_keys), result.unexpected_keys
        del state
    else:
        model = GPT2LMHeadModel(config, device="meta")
        for name, tensor in safetensors_views(f"{directory}/model.safetensors").items():
            owner_name, _, leaf = hf_name(name).rpartition(".")
            owner = model.get_submodule(owner_name)
            if leaf not in owner._parameters:  # the causal-mask buffers stored by old checkpoints: rebuilt instead
                continue
            owner._parameters[leaf] = nn.Parameter(tensor.to(torch.float32), requires_grad=False)
        model.lm_head.weight = model.transformer.wte.weight
        for owner in model.modules():  # any buffer left on meta (none for GPT-2) would fail loudly in forward
            for key, value in owner._buffers.items():
                assert value is None or value.device.type != "meta", key
    for p in model.parameters():  # baukit.set_requires_grad(False, model)
        p.requires_grad = False
    return model.eval(), config


def token_strings(directory):
    """id -> text, decoding GPT-2's byte-level tokens (bytes that are not whole UTF-8 become U+FFFD)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = {}, 256
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(extra)] = b
            extra += 1
    with open(f"{directory}/vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    out = [""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        out[i] = bytes(chars[c] for c in token).decode("utf-8", errors="replace")
    return out


def show_html(rows):
    """The seed's show(): a list of rows, each a list of cells [style, attr, text]."""
    out = ['<div style="display: flex; flex-direction: column;">']
    for row in rows:
        out.append('<div style="display: flex; flex-direction: row;">')
        for style, title, text in row:
            css = "; ".join(f"{k}: {v}" for k, v in style.items())
            attr = f' title="{html.escape(title)}"' if title is not None else ""
            out.append(f'<div style="{html.escape(css)}"{attr}>{html.escape(text)}</div>')
        out.append("</div>")
    out.append("</div>")
    return "".join(out)


def logit_lens_html(decoder, hs, prompt_tokens, strings, topk=5, color=(0, 0, 255)):
    probs = decoder(hs)  # Apply the decoder head to every hidden state
    favorite_probs, favorite_tokens = probs.topk(k=topk, dim=-1)
    magnitudes = hs.norm(dim=-1)
    magnitudes = magnitudes / (magnitudes[:, :, 1:].max() if hs.size(2) > 1 else magnitudes.max())
    header = [[{"font-weight": "bold"}, None, "Layer"]] + [
        [{"background": "yellow"}, f"Token {i}", t] for i, t in enumerate(prompt_tokens)]
    rows = [header]
    for layer in range(hs.size(0)):
        row = [[{"font-weight": "bold"}, None, str(layer)]]
        for m, p, t in zip(magnitudes[layer, 0].tolist(), favorite_probs[layer, 0].tolist(), favorite_tokens[layer, 0].tolist()):
            a = [int(255 * (1 - m) + c * m) for c in color]
            b = int(255 * (1 - p[0]))
            lines = [f"mag: {m:.2f}"] + [f"{strings[tt]}: prob {pp:.2f}" for pp, tt in zip(p, t)]
            row.append([{"background": f"rgb({a[0]}, {a[1]}, {a[2]})", "color": f"rgb({b}, {b}, {b})", "overflow-x": "hide"},
                        "\n".join(lines), strings[t[0]]])
        rows.append(row)
    rows.append(header)
    return show_html(rows), favorite_tokens[:, 0, :, 0].tolist()


def lens(args):
    times = {"import": imported - started}
    t = time.perf_counter()
    model, config = load(args.model, args.load)
    strings = token_strings(args.model)
    times["load"] = time.perf_counter() - t
    ids = torch.tensor([args.ids])

    with torch.no_grad():
        t = time.perf_counter()
        outputs = {}
        names = ["transformer.drop"] + [f"transformer.h.{i}" for i in range(config["n_layer"])]
        hooks = [model.get_submodule(n).register_forward_hook(
            lambda module, inputs, output, name=n: outputs.__setitem__(name, output)) for n in names]
        model(ids)
        for h in hooks:
            h.remove()
        hs = torch.stack([outputs[n][0] for n in names[1:]])  # [layers, 1, tokens, n_embd]
        previous = torch.cat([outputs["transformer.drop"][None], hs[:-1]])
        times["forward"] = time.perf_counter() - t

        t = time.perf_counter()
        decoder = nn.Sequential(model.transformer.ln_f, model.lm_head, nn.Softmax(dim=-1))
        prompt_tokens = [strings[i] for i in args.ids]
        lens_html, lens_top1 = logit_lens_html(decoder, hs, prompt_tokens, strings)
        delta_html, delta_top1 = logit_lens_html(decoder, hs - previous, prompt_tokens, strings)
        times["decode"] = time.perf_counter() - t

    t = time.perf_counter()
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{lens_html}<hr>{delta_html}</body></html>")
    times["page"] = time.perf_counter() - t
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"lens": lens_top1, "delta_lens": delta_top1}, f)
    print(json.dumps(times))


def generate(args):
    times = {"import": imported - started}
    t = time.perf_counter()
    model, _ = load(args.model, args.load)
    times["load"] = time.perf_counter() - t
    t = time.perf_counter()
    ids = torch.tensor([args.ids])
    with torch.no_grad():
        for _ in range(args.new_tokens):  # the seed's loop: the whole sequence again for every token
            logits = model(ids)["logits"]
            ids = torch.cat((ids, logits[0, -1].argmax()[None, None]), dim=1)
    times["generate"] = time.perf_counter() - t
    times["new_ids"] = ids[0, len(args.ids):].tolist()
    print(json.dumps(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["lens", "generate"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--ids", required=True, type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--load", choices=["seed", "fast"], default="seed")
    parser.add_argument("--out", default="python-lens.html")
    parser.add_argument("--json")
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lens(args) if args.task == "lens" else generate(args)


if __name__ == "__main__":
    main()
