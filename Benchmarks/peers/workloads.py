#!/usr/bin/env python3
"""The in-process workloads of the peers benchmark, one per run, each in a fresh
process started by bench.py. Imports happen before the clock starts; each
prints one JSON line: {"seconds": ..., "bytes": ..., ...}. Any mismatch exits
non-zero.

    workloads.py boto3 BUCKET PREFIX OUT_DIR [--threads 8] [--part-mib 8]
    workloads.py runai URI... [--verify MODEL_DIR]
    workloads.py load {direct,open,read} MODEL DIR_OR_FILES...
    workloads.py ttft-read MODEL SHARD ORIGINAL_DIR [--in-flight N]
    workloads.py ttft-pull MODEL SHARD ORIGINAL_DIR WEIGHTCACHE_BIN
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time


def header_of(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def first_tensor(header):
    """The tensor stored first in the file (lowest data offset)."""
    return min(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0])


def tensor_bytes(path):
    n, header = header_of(path)
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")


def emit(**fields):
    print(json.dumps(fields), flush=True)


def boto3_pull(a):
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    mib = 1 << 20
    config = TransferConfig(multipart_threshold=a.part_mib * mib, multipart_chunksize=a.part_mib * mib,
                            max_concurrency=a.threads, use_threads=True)
    t0 = time.perf_counter()
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=a.bucket, Prefix=a.prefix.rstrip("/") + "/"):
        keys += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    with create_transfer_manager(client, config) as manager:
        futures = []
        for key, _ in keys:
            dest = os.path.join(a.out, os.path.relpath(key, a.prefix))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            futures.append(manager.download(a.bucket, key, dest))
        for f in futures:
            f.result()
    seconds = time.perf_counter() - t0
    emit(seconds=seconds, bytes=sum(s for _, s in keys), objects=len(keys),
         manager=type(manager).__module__ + "." + type(manager).__name__)


def runai_stream(a):
    import torch
    from runai_model_streamer import SafetensorsStreamer

    total, count, touched = 0, 0, 0
    t0 = time.perf_counter()
    with SafetensorsStreamer() as streamer:
        streamer.stream_files(a.uris)
        tensors = {}
        for name, t in streamer.get_tensors():
            b = t.reshape(-1).view(torch.uint8)
            touched += int(b[::4096].sum())  # one byte per page: the bytes are in this process's memory
            total += b.numel()
            count += 1
            tensors[name] = t
        seconds = time.perf_counter() - t0
    if a.verify:
        from safetensors import safe_open
        checked = 0
        for name in sorted(os.listdir(a.verify)):
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(a.verify, name), framework="numpy") as f:
                    for key in f.keys():
                        if f.get_tensor(key).tobytes() != tensors[key].numpy().tobytes():
                            sys.exit(f"runai: tensor {key} differs from the original")
                        checked += 1
        if checked != count:
            sys.exit(f"runai: streamed {count} tensors, the originals have {checked}")
    emit(seconds=seconds, bytes=total, tensors=count, verified=bool(a.verify))


def load(a):
    """Every tensor of every shard, by one of three paths; bytes summed."""
    import numpy  # noqa: F401  (imported before the clock)
    from safetensors import safe_open

    if a.via in ("open", "read"):
        from weightcache import Client
        from weightcache.tensors import load_tensors
    total, count = 0, 0
    t0 = time.perf_counter()
    if a.via == "direct":
        # The same shape of work as load_tensors: a dict of every tensor of a file, dropped after the file.
        for path in a.files:
            with safe_open(path, framework="numpy") as f:
                got = {key: f.get_tensor(key) for key in f.keys()}
            total += sum(t.nbytes for t in got.values())
            count += len(got)
            del got
    else:
        with Client() as c:
            for path in a.files:
                got = load_tensors(c, a.model, path, via=a.via)
                total += sum(t.nbytes for t in got.values())
                count += len(got)
                del got
    seconds = time.perf_counter() - t0
    emit(seconds=seconds, bytes=total, tensors=count)


def ttft_read(a):
    import numpy  # noqa: F401  (imported before the clock starts, as in ttft_pull)
    from weightcache import Client
    from weightcache.tensors import read_tensor

    # The loader knows which tensor it wants first (both sides do: pull-then-read
    # asks safe_open for the same name); which one is taken from the original.
    n, header = header_of(os.path.join(a.original, a.shard))
    key, meta = first_tensor(header)
    t0 = time.perf_counter()
    with Client() as c:
        if a.in_flight:
            c.max_in_flight = a.in_flight  # diagnostic: fewer pipelined read requests than the daemon allows
        # read_tensor: stat, the header (read and checked), then the tensor's
        # bytes straight into a numpy array, fetched block by block from the
        # store on this cold model (read-through).
        tensor = read_tensor(c, a.model, a.shard, key)
        seconds = time.perf_counter() - t0
    data = tensor.tobytes()
    start, end = meta["data_offsets"]
    check(a, key, n, start, end, data)
    emit(seconds=seconds, bytes=len(data), tensor=key)


def ttft_pull(a):
    import numpy  # noqa: F401
    from safetensors import safe_open

    t0 = time.perf_counter()
    out = subprocess.run([a.bin, "pull", a.model], check=True, stdout=subprocess.PIPE, text=True).stdout
    folder = out.strip().splitlines()[-1]
    path = os.path.join(folder, a.shard)
    n, header = header_of(path)
    key, meta = first_tensor(header)
    with safe_open(path, framework="numpy") as f:
        data = f.get_tensor(key).tobytes()
    seconds = time.perf_counter() - t0
    start, end = meta["data_offsets"]
    check(a, key, n, start, end, data)
    emit(seconds=seconds, bytes=len(data), tensor=key)


def check(a, key, n, start, end, data):
    with open(os.path.join(a.original, a.shard), "rb") as f:
        f.seek(8 + n + start)
        if f.read(end - start) != data:
            sys.exit(f"first tensor {key} differs from the original")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("boto3")
    p.add_argument("bucket"); p.add_argument("prefix"); p.add_argument("out")
    p.add_argument("--threads", type=int, default=8); p.add_argument("--part-mib", type=int, default=8)
    p.set_defaults(fn=boto3_pull)
    p = sub.add_parser("runai")
    p.add_argument("uris", nargs="+"); p.add_argument("--verify")
    p.set_defaults(fn=runai_stream)
    p = sub.add_parser("load")
    p.add_argument("via", choices=["direct", "open", "read"]); p.add_argument("model"); p.add_argument("files", nargs="+")
    p.set_defaults(fn=load)
    for name, fn in (("ttft-read", ttft_read), ("ttft-pull", ttft_pull)):
        p = sub.add_parser(name)
        p.add_argument("model"); p.add_argument("shard"); p.add_argument("original")
        if name == "ttft-pull":
            p.add_argument("bin")
        else:
            p.add_argument("--in-flight", type=int, default=0)
        p.set_defaults(fn=fn)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
