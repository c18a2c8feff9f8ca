#!/usr/bin/python3
"""Writes the fuzzers' seed corpora (tests/fuzz/corpus/<fuzzer>/). Needs Debian's python3-torch for the
torch.save seeds; run from the repository root: /usr/bin/python3 tests/fuzz/make_seeds.py"""
import io
import json
import os
import struct
from collections import OrderedDict

import torch

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(fuzzer, name, data):
    os.makedirs(os.path.join(root, fuzzer), exist_ok=True)
    with open(os.path.join(root, fuzzer, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, pad=0):
    header, offset, body = {}, 0, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + body


f32 = lambda *values: struct.pack(f"<{len(values)}f", *values)
put("safetensors", "two-tensors", safetensors({"a": ("F32", [2, 2], f32(1, 2, 3, 4)), "b": ("F16", [2], b"\x00\x3c" * 2)}))
put("safetensors", "metadata-bf16-i64", safetensors({"w": ("BF16", [3], b"\x80\x3f" * 3), "i": ("I64", [1], b"\x07" + b"\0" * 7)},
                                                    {"format": "pt"}, pad=5))
put("safetensors", "empty-and-bool", safetensors({"e": ("F32", [0, 4], b""), "m": ("BOOL", [2], b"\x01\x00")}))
put("safetensors", "overlap", safetensors({"a": ("F32", [1], f32(1))})[:-4] + f32(2))
for fixture in ["gpt2-tiny", "gpt2-tiny-prefixed-bf16"]:
    with open(f"tests/data/fixtures/{fixture}/model.safetensors", "rb") as f:
        data = f.read()
    if len(data) < 200_000:
        put("safetensors", fixture, data)


def torch_bin(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


put("torch_bin", "two-tensors", torch_bin(OrderedDict(a=torch.arange(4.0).reshape(2, 2), b=torch.ones(3, dtype=torch.float16))))
put("torch_bin", "shared-storage-view", torch_bin(OrderedDict(base=torch.arange(6.0), view=torch.arange(6.0)[2:4])))
put("torch_bin", "parameter-bf16", torch_bin(OrderedDict(p=torch.nn.Parameter(torch.ones(2, 2, dtype=torch.bfloat16)))))

for fixture in ["gpt2-tiny", "gpt2-tiny-prefixed-bf16", "gptj-tiny-f16-bin"]:
    with open(f"tests/data/fixtures/{fixture}/config.json", "rb") as f:
        put("config", fixture, f.read())
put("config", "index", json.dumps({"metadata": {"total_size": 8}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                                                 "b": "model-00002-of-00002.safetensors"}}))
put("config", "gpt2-xl", json.dumps({"model_type": "gpt2", "n_embd": 1600, "n_head": 25, "n_layer": 48, "n_positions": 1024,
                                     "vocab_size": 50257, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}))

put("tokenizer", "encode-ascii", b"\x00The Space Needle is located in the city of")
put("tokenizer", "encode-unicode", "\x00 东京 🙂 naïve\t\n  <|endoftext|>'s 1234".encode())
put("tokenizer", "decode", b"\x01" + struct.pack("<8H", 464, 4687, 48190, 318, 50256, 220, 1, 2))
printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte-to-unicode map
byte_chars = [chr(b) if b in printable else None for b in range(256)]
extra = iter(range(256, 512))
byte_chars = [c if c else chr(next(extra)) for c in byte_chars]
vocab = {c: i for i, c in enumerate(byte_chars)} | {"ab": 256, "\u0120t": 257, "he": 258, "\u0120the": 259}
put("tokenizer", "files", b"\x02" + json.dumps(vocab).encode() + "\0#version: 0.2\na b\n\u0120 t\nh e\n\u0120t he\n".encode())
# tokenizer.json: a byte-level pipeline and a SentencePiece-style one (byte fallback, added tokens, template).
byte_vocab = {"\u0120": 0, "t": 1, "\u0120t": 2, "h": 3, "e": 4, "he": 5}
json_byte = {"model": {"type": "BPE", "vocab": byte_vocab, "merges": ["\u0120 t", ["h", "e"]]},
             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                 {"type": "Split", "pattern": {"Regex": "(?i:'s|'t)|\\p{L}+|\\p{N}{1,3}|\\s+(?!\\S)|\\s+"},
                  "behavior": "Isolated", "invert": False},
                 {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
             "decoder": {"type": "ByteLevel"}, "normalizer": {"type": "NFC"},
             "added_tokens": [{"id": 6, "content": "<s>", "special": True}]}
put("tokenizer", "json-byte-level", b"\x03" + json.dumps(json_byte).encode())
sp_vocab = {"<unk>": 0, "<s>": 1, **{"<0x%02X>" % b: 2 + b for b in range(256)}, "\u2581": 258, "H": 259, "e": 260}
json_sp = {"model": {"type": "BPE", "vocab": sp_vocab, "merges": ["\u2581 H"], "byte_fallback": True,
                     "unk_token": "<unk>", "fuse_unk": True},
           "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                              {"type": "Replace", "pattern": {"String": " "},
                                                               "content": "\u2581"}]},
           "pre_tokenizer": {"type": "Digits", "individual_digits": True},
           "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},
                                                                       {"Sequence": {"id": "A"}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}},
           "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"},
                                                         "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
                                                        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "added_tokens": [{"id": 1, "content": "<s>", "special": True, "lstrip": True, "rstrip": True}]}
put("tokenizer", "json-sentencepiece", b"\x03" + json.dumps(json_sp).encode())
put("tokenizer", "json-unigram", b"\x03" + json.dumps({"model": {"type": "Unigram", "vocab": []}}).encode())
put("tokenizer", "files-broken", b"\x02" + json.dumps({"a": 0, "b": 1, "ab": 2}).encode() + b"\0#version: 0.2\na b c\n")

put("show", "plain", b"hello\0title\0a tooltip\0red\0token")
put("show", "hostile", "<script>alert(1)</script>\0href\0javascript:alert(1)\0red\0</script><b>".encode())
put("show", "quotes", b"\"'&<>\0data-x\0\" onmouseover=\"alert(1)\0blue\0\\u003c")

# Cases of the bad-checkpoint corpus (tests/data/bad-checkpoints/make_corpus.py) that the sanitizer run must cover:
# sizes, strides and offsets near 2^63 in a pickle, and a NUL-padded safetensors header.
bad = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "bad-checkpoints")
for fuzzer, case, file in [("torch_bin", "pickle-stride-overflow", "pytorch_model.bin"),
                           ("torch_bin", "pickle-numel-overflow", "pytorch_model.bin"),
                           ("torch_bin", "pickle-offset-overflow", "pytorch_model.bin"),
                           ("safetensors", "header-padded-with-nul", "model.safetensors")]:
    with open(os.path.join(bad, case, file), "rb") as f:
        put(fuzzer, case, f.read())
put("config", "huge-sizes", json.dumps({"model_type": "gpt2", "n_embd": 2**40, "n_head": 2, "n_layer": 10**9,
                                        "n_positions": 10**10, "vocab_size": 10**12, "n_inner": 2**62}))
