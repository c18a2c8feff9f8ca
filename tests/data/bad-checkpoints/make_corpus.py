#!/usr/bin/python3
"""Writes the corpus of malformed checkpoints, one folder per case, each with `expect.json`: the CheckpointError
kind loading must raise and the strings its message must contain (the file and, where there is one, the tensor).
Standard library only; run from anywhere: python3 tests/data/bad-checkpoints/make_corpus.py"""
import io
import json
import os
import pickle
import random
import shutil
import struct
import zipfile
from collections import OrderedDict

here = os.path.dirname(os.path.abspath(__file__))
E, V, P, L = 8, 16, 8, 1  # a tiny GPT-2: width, vocabulary, positions, layers
config = {"model_type": "gpt2", "n_embd": E, "n_head": 2, "n_layer": L, "n_positions": P, "vocab_size": V}
shapes = OrderedDict([("transformer.wte.weight", [V, E]), ("transformer.wpe.weight", [P, E])])
for i in range(L):
    for name, shape in [("ln_1.weight", [E]), ("ln_1.bias", [E]), ("attn.c_attn.weight", [E, 3 * E]),
                        ("attn.c_attn.bias", [3 * E]), ("attn.c_proj.weight", [E, E]), ("attn.c_proj.bias", [E]),
                        ("ln_2.weight", [E]), ("ln_2.bias", [E]), ("mlp.c_fc.weight", [E, 4 * E]),
                        ("mlp.c_fc.bias", [4 * E]), ("mlp.c_proj.weight", [4 * E, E]), ("mlp.c_proj.bias", [E])]:
        shapes[f"transformer.h.{i}.{name}"] = shape
shapes["transformer.ln_f.weight"] = [E]
shapes["transformer.ln_f.bias"] = [E]
rng = random.Random(7)


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def values(shape):
    return [rng.uniform(-0.1, 0.1) for _ in range(numel(shape))]


def safetensors(tensors, header_edit=None):
    """tensors: name -> (dtype, shape, bytes). Returns the file's bytes; header_edit may change the header dict."""
    header, offset, body = {}, 0, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        body += data
    if header_edit:
        header_edit(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def f32(vals):
    return struct.pack(f"<{len(vals)}f", *vals)


good = OrderedDict((name, ("F32", shape, f32(values(shape)))) for name, shape in shapes.items())


def case(name, expect, files, cfg=None):
    folder = os.path.join(here, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg or config, f, indent=1)
    for file_name, data in files.items():
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(data)
    with open(os.path.join(folder, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1)


def st(kind, *mentions):
    return {"kind": kind, "mentions": ["model.safetensors", *mentions]}


full = safetensors(good)
last = list(shapes)[-1]
case("truncated", st("truncated", last), {"model.safetensors": full[:-10]})
case("header-length-beyond-file", st("truncated", "runs past the end"),
     {"model.safetensors": struct.pack("<Q", len(full)) + full[8:]})
case("header-length-huge", st("header", "exceeds the limit"), {"model.safetensors": struct.pack("<Q", 1 << 40) + full[8:]})
bad_utf8 = full.replace(b'"transformer.wpe.weight"', b'"transformer.wpe.weigh\xff"', 1)
case("invalid-utf8-header", st("header", "not valid JSON"), {"model.safetensors": bad_utf8})
header_len = struct.unpack("<Q", full[:8])[0]
case("invalid-json-header", st("header", "not valid JSON"),
     {"model.safetensors": full[:8] + full[8:8 + header_len].replace(b"}", b"]", 1) + full[8 + header_len:]})
case("unknown-dtype", st("dtype", "transformer.wpe.weight", "F33"),
     {"model.safetensors": safetensors(good, lambda h: h["transformer.wpe.weight"].update(dtype="F33"))})


def overlap(h):
    h["transformer.wpe.weight"]["data_offsets"] = [4, 4 + numel(shapes["transformer.wpe.weight"]) * 4]


case("overlapping-offsets", st("offsets", "transformer.wpe.weight", "overlaps", "transformer.wte.weight"),
     {"model.safetensors": safetensors(good, overlap)})


def out_of_range(h):
    begin, end = h["transformer.wpe.weight"]["data_offsets"]
    h["transformer.wpe.weight"]["data_offsets"] = [begin + 10**9, end + 10**9]


case("out-of-range-offsets", st("offsets", "transformer.wpe.weight"), {"model.safetensors": safetensors(good, out_of_range)})
case("byte-count-not-matching-shape", st("size", "transformer.ln_f.bias", "needs"),
     {"model.safetensors": safetensors(good, lambda h: h["transformer.ln_f.bias"].update(shape=[E + 1]))})
dup = full.replace(b'"transformer.wpe.weight"', b'"transformer.wte.weight"', 1)
case("duplicate-names", st("header", "transformer.wte.weight", "listed twice"), {"model.safetensors": dup})
nan = OrderedDict(good)
nan["transformer.h.0.mlp.c_fc.weight"] = ("F32", shapes["transformer.h.0.mlp.c_fc.weight"],
                                         f32([float("nan")] * numel(shapes["transformer.h.0.mlp.c_fc.weight"])))
case("nan-weights", st("non_finite", "transformer.h.0.mlp.c_fc.weight"), {"model.safetensors": safetensors(nan)})
missing = OrderedDict((k, v) for k, v in good.items() if k != "transformer.h.0.attn.c_proj.weight")
case("missing-tensor", st("missing", "h.0.attn.c_proj.weight"), {"model.safetensors": safetensors(missing)})
extra = OrderedDict(good)
extra["transformer.h.1.ln_1.weight"] = ("F32", [E], f32(values([E])))
case("extra-tensor", st("unexpected", "h.1.ln_1.weight"), {"model.safetensors": safetensors(extra)})
case("wrong-n_embd-in-config", st("shape", "wte.weight", "[16, 8]", "[16, 12]"), {"model.safetensors": full},
     cfg=dict(config, n_embd=12))
case("n_embd-not-divisible-by-n_head", {"kind": "config", "mentions": ["config.json", "n_embd", "n_head"]},
     {"model.safetensors": full}, cfg=dict(config, n_head=3))


def torch_zip(pickle_bytes, storages):
    """A torch.save-style zip: archive/data.pkl, archive/data/<key>, archive/version (stored, not compressed)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo this must never run > /tmp/baukit-pwned",))


evil = pickle.dumps(OrderedDict([("transformer.wte.weight", RunsACommand())]), protocol=2)
case("pickle-foreign-global", {"kind": "pickle", "mentions": ["pytorch_model.bin", "system"]},
     {"pytorch_model.bin": torch_zip(evil, {})})

# A valid-looking archive whose central directory sends a record past the end of the file.
archive = bytearray(torch_zip(pickle.dumps(OrderedDict(), protocol=2), {"0": b"\0" * 16}))
central = archive.rfind(b"PK\x01\x02")
struct.pack_into("<I", archive, central + 42, len(archive) + 1000)  # local header offset
case("zip-entry-outside-file", {"kind": "archive", "mentions": ["pytorch_model.bin"]}, {"pytorch_model.bin": bytes(archive)})

# Hostile input, round 2.
# A pickle nesting lists 200,000 deep (400 KB): once a stack overflow in recursive destruction.
deep = b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b"."
case("pickle-nested-deep", {"kind": "pickle", "mentions": ["pytorch_model.bin", "nest more than 100 deep"]},
     {"pytorch_model.bin": torch_zip(deep, {})})


def tensor_pickle(size, stride, offset=0, numel=4):
    """data.pkl of {'w': _rebuild_tensor_v2(storage '0' of `numel` floats, offset, size, stride)}, by opcode."""
    def long1(n):
        return b"\x8a\x08" + struct.pack("<q", n)
    ints = lambda values: b"(" + b"".join(long1(v) for v in values) + b"t"
    return (b"\x80\x02ccollections\nOrderedDict\n)R" + b"X\x01\x00\x00\x00w"
            + b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
            + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpu" + long1(numel) + b"tQ" + long1(offset)
            + ints(size) + ints(stride) + b"\x89ccollections\nOrderedDict\n)RtRs.")


# Sizes and strides near 2^63: the bounds check itself once overflowed (undefined behaviour).
for name, size, stride, offset in [("pickle-stride-overflow", [2, 2], [2**62, 1], 0),
                                   ("pickle-numel-overflow", [2**62, 4], [4, 1], 0),
                                   ("pickle-offset-overflow", [2], [1], 2**63 - 1)]:
    case(name, {"kind": "pickle", "mentions": ["pytorch_model.bin", "_rebuild_tensor_v2: the view reaches"]},
         {"pytorch_model.bin": torch_zip(tensor_pickle(size, stride, offset), {"0": b"\0" * 16})})

# config.json settings the checkpoint contradicts: refused before the model is built, naming key, tensor, shapes.
cfg = lambda **changes: dict(config, **changes)
case("config-n_layer-huge", {"kind": "config", "mentions": ["config.json", "'n_layer' is 1000000000", "1 block(s)"]},
     {"model.safetensors": full}, cfg=cfg(n_layer=10**9))
case("config-n_layer-100000", {"kind": "config", "mentions": ["config.json", "'n_layer' is 100000"]},
     {"model.safetensors": full}, cfg=cfg(n_layer=100_000))
case("config-n_embd-2-40", st("shape", "config.json", "'n_embd'", "transformer.wte.weight", "[16, 8]",
                              f"[16, {2**40}]"), {"model.safetensors": full}, cfg=cfg(n_embd=2**40))
case("config-n_embd-2-50", {"kind": "config", "mentions": ["config.json", "'n_embd'", "at most 2^40"]},
     {"model.safetensors": full}, cfg=cfg(n_embd=2**50))
case("config-vocab_size-huge", st("shape", "'vocab_size'", "transformer.wte.weight", f"[{10**12}, 8]"),
     {"model.safetensors": full}, cfg=cfg(vocab_size=10**12))
case("config-n_positions-huge", st("shape", "'n_positions'", "transformer.wpe.weight", f"[{10**10}, 8]"),
     {"model.safetensors": full}, cfg=cfg(n_positions=10**10))
case("config-n_inner-2-40", st("shape", "'n_inner'", "transformer.h.0.mlp.c_fc.weight", f"[8, {2**40}]"),
     {"model.safetensors": full}, cfg=cfg(n_inner=2**40))

# A safetensors header padded with NUL bytes (the format pads with spaces; the reference reader refuses NUL).
text = json.dumps(json.loads(full[8:8 + header_len])).encode() + b"\0" * 6
case("header-padded-with-nul", st("header", "NUL byte"),
     {"model.safetensors": struct.pack("<Q", len(text)) + text + full[8 + header_len:]})
