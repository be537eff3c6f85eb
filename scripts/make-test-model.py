#!/usr/bin/env python3
"""Writes a small but real model folder: safetensors shards (float16, bfloat16
as raw uint16 bit patterns, float32), a config.json and a tokenizer file, with
the tensors' values reproducible from the seed.

    make-test-model.py DIR [--big-mib N] [--shards K] [--seed S]

The first shard is about N MiB (default 110, over 100 MiB as the tests want),
the others a few MiB. `verify-test-model.py`-style checks are done by the
tests themselves with `safetensors.numpy.load_file`.
"""
import argparse, json, os
import numpy as np
from safetensors.numpy import save_file


def tensors(seed, shard, big_mib):
    rng = np.random.default_rng(seed * 1000 + shard)
    if shard == 0:
        # One large float16 matrix: the bulk of the model.
        rows = max(1, (big_mib << 20) // (4096 * 2))
        out = {"model.embed_tokens.weight": rng.standard_normal((rows, 4096), dtype=np.float32).astype(np.float16)}
    else:
        out = {}
    out[f"layers.{shard}.attn.q_proj.weight"] = rng.standard_normal((512, 512), dtype=np.float32).astype(np.float16)
    out[f"layers.{shard}.mlp.up_proj.weight"] = rng.standard_normal((512, 1024), dtype=np.float32)
    # bfloat16 has no numpy dtype: the upper halves of float32 values, as uint16.
    bf = rng.standard_normal((256, 512), dtype=np.float32).view(np.uint32) >> 16
    out[f"layers.{shard}.norm.bf16_bits"] = bf.astype(np.uint16)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--big-mib", type=int, default=110)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    for shard in range(args.shards):
        name = f"model-{shard + 1:05d}-of-{args.shards:05d}.safetensors"
        save_file(tensors(args.seed, shard, args.big_mib), os.path.join(args.dir, name), metadata={"format": "pt"})
    with open(os.path.join(args.dir, "config.json"), "w") as f:
        json.dump({"architectures": ["TestForCausalLM"], "hidden_size": 4096, "torch_dtype": "float16"}, f)
    os.makedirs(os.path.join(args.dir, "tokenizer"), exist_ok=True)
    with open(os.path.join(args.dir, "tokenizer", "vocab.txt"), "w") as f:
        f.write("\n".join(f"tok{i}" for i in range(1000)))


if __name__ == "__main__":
    main()
