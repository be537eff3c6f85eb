#!/usr/bin/env python3
"""A realistic multi-shard safetensors model for the peers benchmark.

TinyLlama-1.1B shapes by default (22 layers, hidden 2048, intermediate 5632,
vocab 32000, 32 attention heads and 4 KV heads of dim 64, untied lm_head),
float16, about 2.2 GB, split HF-style into model-0000K-of-0000N.safetensors with
model.safetensors.index.json and config.json.

    make-model.py OUT_DIR [--shards 4] [--total-mib MIB] [--layers 22] [--seed 0]

--total-mib scales hidden, intermediate and vocab (by the square root of the
ratio) so that the model is about that size: the smoke test uses ~24 MiB.
Values are random bytes viewed as float16 with the exponent's top bit cleared:
finite (no NaN/Inf), |x| < 2, incompressible. Only numpy is needed; tensors are
written one at a time, so memory stays at the largest tensor.
"""
import argparse
import json
import math
import os

import numpy as np

FULL = dict(hidden=2048, intermediate=5632, vocab=32000, heads=32, kv_heads=4, head_dim=64)


def shapes(layers, hidden, intermediate, vocab, heads, kv_heads, head_dim):
    """(name, shape) in the order HF checkpoints list them."""
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    kv = kv_heads * head_dim
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (intermediate, hidden)),
            (p + "mlp.up_proj.weight", (intermediate, hidden)),
            (p + "mlp.down_proj.weight", (hidden, intermediate)),
        ]
    out += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return out


def dims_for(total_mib, layers):
    def params(d):
        h, i, v = d["hidden"], d["intermediate"], d["vocab"]
        q = d["heads"] * d["head_dim"]
        kv = d["kv_heads"] * d["head_dim"]
        return layers * (2 * h * q + 2 * h * kv + 3 * h * i + 2 * h) + 2 * v * h + h

    d = dict(FULL)
    if total_mib is None:
        return d
    s = math.sqrt(total_mib * 2**20 / 2 / params(FULL))
    r64 = lambda x: max(64, int(round(x * s / 64)) * 64)
    d["hidden"] = r64(FULL["hidden"])
    d["intermediate"] = r64(FULL["intermediate"])
    d["vocab"] = r64(FULL["vocab"])
    d["heads"] = d["hidden"] // d["head_dim"]
    d["kv_heads"] = max(1, d["heads"] // 8)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--total-mib", type=float, default=None, help="scale the model to about this size")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    d = dims_for(a.total_mib, a.layers)
    tensors = shapes(a.layers, **d)
    sizes = [2 * math.prod(s) for _, s in tensors]
    total = sum(sizes)
    # Shard k holds the tensors whose first byte falls in the k-th Nth of the
    # model: exactly N shards of about equal size (HF cuts at a max size instead).
    shard_of, start = [], 0
    for n in sizes:
        shard_of.append(min(a.shards - 1, start * a.shards // total))
        start += n
    if len(set(shard_of)) != a.shards:
        raise SystemExit(f"{a.shards} shards do not fit {len(tensors)} tensors of this size")

    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    names = [f"model-{k + 1:05d}-of-{a.shards:05d}.safetensors" for k in range(a.shards)]
    weight_map = {}
    for k, fname in enumerate(names):
        members = [(t, n) for t, n, s in zip(tensors, sizes, shard_of) if s == k]
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for (name, shape), n in members:
            header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[name] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for _, n in members:
                v = np.frombuffer(rng.bytes(n), dtype=np.uint16).copy()
                v &= 0xBFFF  # exponent <= 15: finite, no NaN
                v.tofile(f)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
        "hidden_size": d["hidden"], "intermediate_size": d["intermediate"], "vocab_size": d["vocab"],
        "num_hidden_layers": a.layers, "num_attention_heads": d["heads"],
        "num_key_value_heads": d["kv_heads"], "head_dim": d["head_dim"],
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    params = total // 2
    print(f"{a.out}: {len(tensors)} tensors, {params / 1e9:.3f} B parameters, "
          f"{total / 2**20:.1f} MiB of tensors in {a.shards} shards")


if __name__ == "__main__":
    main()
