#!/usr/bin/env python3
"""Writes the fuzzers' starting inputs to fuzz/seeds/<target>/: small valid
files of each kind (a tiny Llama GGUF with tokenizer and chat template, HF
directories, templates, tool calls, quantized blocks), so the fuzzers start
deep inside the readers instead of at the magic bytes. Deterministic."""
import json
import pathlib
import random
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fuzz" / "seeds"
rng = random.Random(14)

# ggml type ids and (block values, block bytes)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 20, 30
BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22),
         Q5_1: (32, 24), Q8_0: (32, 34), IQ4_NL: (32, 18), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(v):
    """(type id, bytes) of a metadata value."""
    if isinstance(v, bool):
        return 7, struct.pack("<?", v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, str):
        return 8, gstr(v)
    if isinstance(v, tuple):  # explicit (type, packed)
        return v
    if isinstance(v, list):
        items = [gval(x) for x in v]
        t = items[0][0] if items else 8
        return 9, struct.pack("<IQ", t, len(items)) + b"".join(p for _, p in items)
    raise TypeError(v)


def block_bytes(t, n_values):
    per, size = BLOCK[t]
    out = bytearray()
    for _ in range(n_values // per):
        if t == F32:
            out += struct.pack("<f", rng.uniform(-1, 1))
        elif t in (F16, BF16):
            out += struct.pack("<e", rng.uniform(-1, 1)) if t == F16 else struct.pack("<f", rng.uniform(-1, 1))[2:]
        else:
            b = bytearray(rng.getrandbits(8) for _ in range(size))
            b[0:2] = struct.pack("<e", 0.01)  # a sane scale
            out += b
    return bytes(out)


def gguf(meta, tensors, align=32):
    """tensors: (name, dims (ne0 first), type)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for k, v in meta:
        t, p = gval(v)
        head += gstr(k) + struct.pack("<I", t) + p
    data = b""
    infos = b""
    for name, dims, t in tensors:
        n = 1
        for d in dims:
            n *= d
        if len(data) % align:
            data += b"\0" * (align - len(data) % align)
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", t, len(data))
        data += block_bytes(t, n)
    body = head + infos
    if len(body) % align:
        body += b"\0" * (align - len(body) % align)
    return body + data


TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + list("abcdeHlo,! \u0120w") + ["He", "ll", "Hell", "\u0120w", "12", "+"]
MERGES = ["H e", "l l", "He ll"]
TEMPLATE = (ROOT / "models" / "tests" / "templates" / "qwen2.5.jinja").read_text()


def llama_meta(arch="llama", extra=()):
    return [
        ("general.architecture", arch),
        ("general.name", "tiny"),
        (f"{arch}.block_count", 1),
        (f"{arch}.embedding_length", 32),
        (f"{arch}.attention.head_count", 2),
        (f"{arch}.attention.head_count_kv", 1),
        (f"{arch}.feed_forward_length", 32),
        (f"{arch}.context_length", 64),
        (f"{arch}.rope.freq_base", 10000.0),
        (f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.pre", "smollm"),
        ("tokenizer.ggml.tokens", TOKENS),
        ("tokenizer.ggml.token_type", [(5, struct.pack("<i", 3 if i < 3 else 1)) for i in range(len(TOKENS))]),
        ("tokenizer.ggml.merges", MERGES),
        ("tokenizer.ggml.bos_token_id", 1),
        ("tokenizer.ggml.eos_token_id", 2),
        ("tokenizer.chat_template", TEMPLATE),
        *extra,
    ]


def llama_tensors(mat):
    v = len(TOKENS)
    t = [("token_embd.weight", [32, v], F32), ("output_norm.weight", [32], F32)]
    for name, dims in [("attn_norm", [32]), ("attn_q", [32, 32]), ("attn_k", [32, 16]), ("attn_v", [32, 16]),
                       ("attn_output", [32, 32]), ("ffn_norm", [32]), ("ffn_gate", [32, 32]),
                       ("ffn_up", [32, 32]), ("ffn_down", [32, 32])]:
        t.append((f"blk.0.{name}.weight", dims, F32 if len(dims) == 1 else mat))
    return t


def safetensors(tensors):
    """tensors: (name, shape, dtype str) with random data."""
    header, data = {}, b""
    for name, shape, dt in tensors:
        n = 1
        for d in shape:
            n *= d
        size = {"F32": 4, "F16": 2, "BF16": 2}[dt]
        raw = b"".join(struct.pack("<e", rng.uniform(-1, 1)) for _ in range(n)) if dt == "F16" else \
            bytes(rng.getrandbits(8) for _ in range(n * size))
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def hf_tensors():
    v = len(TOKENS)
    t = [("model.embed_tokens.weight", [v, 32], "F16"), ("model.norm.weight", [32], "F32")]
    for name, shape in [("input_layernorm", [32]), ("self_attn.q_proj", [32, 32]), ("self_attn.k_proj", [16, 32]),
                        ("self_attn.v_proj", [16, 32]), ("self_attn.o_proj", [32, 32]),
                        ("post_attention_layernorm", [32]), ("mlp.gate_proj", [32, 32]),
                        ("mlp.up_proj", [32, 32]), ("mlp.down_proj", [32, 32])]:
        t.append((f"model.layers.0.{name}.weight", shape, "F32" if len(shape) == 1 else "F16"))
    return t


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    # gguf: the tiny model in several matrix formats, a file of every
    # metadata type, and one with a tensor past the end.
    for label, t in [("f32", F32), ("q8_0", Q8_0), ("q4_0", Q4_0), ("q4_1", Q4_1), ("q5_0", Q5_0),
                     ("iq4_nl", IQ4_NL), ("f16", F16)]:
        write("gguf", f"tiny-{label}.gguf", gguf(llama_meta(), llama_tensors(t)))
    write("gguf", "qwen2-arch.gguf", gguf(llama_meta("qwen2"), llama_tensors(Q8_0)))
    meta = [("general.architecture", "llama"), ("u8", (0, b"\x07")), ("i8", (1, b"\xff")), ("u16", (2, b"\x01\x02")),
            ("i16", (3, b"\xff\xff")), ("i32", (5, struct.pack("<i", -5))), ("u64", (10, struct.pack("<Q", 1 << 40))),
            ("i64", (11, struct.pack("<q", -1))), ("f64", (12, struct.pack("<d", 2.5))), ("bool", True),
            ("nested", (9, struct.pack("<IQ", 9, 2) + gval([1, 2])[1][0:0] + struct.pack("<IQ", 4, 1) + struct.pack("<I", 3)
                        + struct.pack("<IQ", 8, 1) + gstr("x"))),
            ("general.alignment", 64)]
    write("gguf", "metadata-types.gguf", gguf(meta, [("t", [32, 2], Q8_0)], align=64))
    k_meta = [("general.architecture", "llama")]
    write("gguf", "k-quants.gguf", gguf(k_meta, [("a", [256, 1], Q4_K), ("b", [256, 1], Q5_K), ("c", [256, 1], Q6_K)]))

    # hf_dir: config, one file; and config, index, two shards.
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 32,
           "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": len(TOKENS),
           "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
           "hidden_act": "silu", "model_type": "llama", "torch_dtype": "float16"}
    mark = b"\n--8<--\n"
    ts = hf_tensors()
    write("hf_dir", "single", json.dumps(cfg).encode() + mark + safetensors(ts))
    a, b = ts[:5], ts[5:]
    index = {"metadata": {}, "weight_map": {**{n: "model.safetensors" for n, _, _ in a},
                                            **{n: "model-00002-of-00002.safetensors" for n, _, _ in b}}}
    write("hf_dir", "sharded", json.dumps(cfg).encode() + mark + safetensors(a) + mark + json.dumps(index).encode()
          + mark + safetensors(b))
    cfg2 = dict(cfg, rope_scaling={"rope_type": "llama3", "factor": 8.0}, sliding_window=16)
    write("hf_dir", "rope-scaling", json.dumps(cfg2).encode() + mark + safetensors(ts))

    # chat_template: the real-world templates and small feature probes.
    for p in sorted((ROOT / "models" / "tests" / "templates").glob("*.jinja")):
        write("chat_template", p.name, p.read_text())
    write("chat_template", "features.jinja",
          "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
          "{{ m.role | upper }}:{{ m.content.strip() }}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}"
          "{{ tools | tojson(indent=2) }}{% macro f(x) %}[{{ x }}]{% endmacro %}{{ f(bos_token ~ eos_token) }}")

    # tool_call: actions as the model writes them, and inline calls.
    for i, a in enumerate([
        {"tool": "calculator", "arguments": {"expression": "(347 * 29) / 7 + 2^10 - 0.5"}},
        {"tool": "memory", "arguments": {"op": "set", "name": "x", "value": "42"}},
        {"tool": "memory", "arguments": {"op": "get", "name": "x"}},
        {"tool": "memory", "arguments": {"op": "list"}},
        {"tool": "answer", "arguments": {"text": "10063"}},
        {"tool": "nope", "arguments": []},
    ]):
        write("tool_call", f"action-{i}.json", json.dumps(a))
    write("tool_call", "inline.txt", "Janet has 16 eggs, eats 3: <<16-3=")
    write("tool_call", "expr.txt", "((1.5+2)*3^4)/(7-2)")

    # tensor_decode: format selector, n, k, then blocks.
    for i, t in enumerate([F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q4_K, Q5_K, Q6_K]):
        per, _ = BLOCK[t]
        k = max(per, 32)
        write("tensor_decode", f"fmt-{i}", bytes([i]) + struct.pack("<HH", 2, k) + block_bytes(t, 2 * k))

    # tokenizer: structured input (arbitrary's encoding); random bytes are
    # valid inputs, a few give the fuzzer a start.
    for i in range(4):
        write("tokenizer", f"random-{i}", bytes(rng.getrandbits(8) for _ in range(256)))
    print("seeds written to", OUT)


if __name__ == "__main__":
    main()
