"""Micro-benchmark: load_tensors(via="read") against the bytes + safetensors.numpy.load
path it replaced, and safe_open + get_tensor on the same file (tmpfs), with a
minimal daemon stand-in in another process (hello, stat, read; 8 MiB pieces,
32 in flight, replies sent with sendmsg straight from an mmap).

    PYTHONPATH=clients/python python3 clients/python/bench/bench_read.py [MiB] [runs]
"""
import mmap
import os
import socket
import statistics
import sys
import tempfile
import time

import numpy as np
import safetensors
import safetensors.numpy as stn

from weightcache import Client, FileInfo, wire
from weightcache.tensors import load_tensors, tensors_from_buffer
from weightcache.wire import HelloOk

MODEL, NAME = "bench@main", "m.safetensors"


def serve(listener, path):
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    data = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            break
        conn.close()
    with conn:
        pending = bytearray()
        while True:
            more = conn.recv(1 << 16)
            if not more:
                os._exit(0)
            pending += more
            while len(pending) >= wire.HEADER_SIZE:
                n, type_, rid = wire.unpack_header(pending[:wire.HEADER_SIZE])
                if len(pending) < wire.HEADER_SIZE + n:
                    break
                fields = wire.decode_request(type_, bytes(pending[wire.HEADER_SIZE:wire.HEADER_SIZE + n]))
                del pending[:wire.HEADER_SIZE + n]
                if type_ == wire.HELLO:
                    conn.sendall(wire.encode_reply(wire.HELLO_OK, rid, HelloOk(1, "bench", 65536, 8 << 20, 32, 4096)))
                elif type_ == wire.STAT:
                    conn.sendall(wire.encode_reply(wire.FILE, rid, FileInfo(NAME, size, "", wire.NVME_STAGED, 0)))
                elif type_ == wire.READ:
                    _, _, offset, length = fields
                    piece = data[offset:offset + length]
                    conn.sendall(wire.HEADER.pack(8 + len(piece), wire.DATA, 0, rid))
                    conn.sendall(piece)
                else:
                    conn.sendall(wire.encode_reply(wire.OK, rid, ""))


def make_file(path, mib):
    rng = np.random.default_rng(0)
    tensors, left, i = {}, mib << 20, 0
    while left > 0:  # a model-like mix: big f16 matrices, some f32, small bits
        rows = min(left // (4096 * 2), 4096)
        tensors[f"layer.{i}.w"] = rng.standard_normal((max(rows, 1), 4096), dtype=np.float32).astype(np.float16)
        tensors[f"layer.{i}.norm"] = rng.standard_normal(4096, dtype=np.float32)
        left -= max(rows, 1) * 4096 * 2 + 4096 * 4
        i += 1
    stn.save_file(tensors, path, metadata={"format": "pt"})


def median_of(runs, fn):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        del result
    return statistics.median(times)


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path, sock_path = os.path.join(folder, NAME), os.path.join(folder, "s.sock")
    make_file(path, mib)
    size = os.path.getsize(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    pid = os.fork()
    if pid == 0:
        serve(listener, path)
    listener.close()
    try:
        with open(path, "rb") as f:
            raw = f.read()
        expected = stn.load(raw)
        with Client(sock_path) as c:
            got = load_tensors(c, MODEL, NAME, via="read")
            assert all(np.array_equal(got[k], v) for k, v in expected.items())
            del got

            def safe_open():
                with safetensors.safe_open(path, framework="numpy") as h:
                    return {k: h.get_tensor(k) for k in h.keys()}

            def old_read():
                return stn.load(c.read_file(MODEL, NAME))

            def old_read_into():  # read_into as it was: payload buffer, then a copy into place
                buf = bytearray(size)
                view = memoryview(buf)
                def sink(pos, data):
                    view[pos:pos + len(data)] = data
                c._read_ranges(MODEL, NAME, 0, size, sink)
                return buf

            def new_read_into():
                buf = bytearray(size)
                c.read_into(MODEL, NAME, 0, buf)
                return buf

            rows = [
                ("safe_open + get_tensor (tmpfs file)", safe_open),
                ("old via=read: read_file + safetensors.numpy.load", old_read),
                ("new via=read: read_into + views", lambda: load_tensors(c, MODEL, NAME, via="read")),
                ("read_file only (bytes)", lambda: c.read_file(MODEL, NAME)),
                ("read_into, old way (receive, copy)", old_read_into),
                ("read_into, new (received in place)", new_read_into),
                ("parse: safetensors.numpy.load(bytes)", lambda: stn.load(raw)),
                ("parse: bytearray(bytes) + tensors_from_buffer", lambda: tensors_from_buffer(bytearray(raw))),
                ("parse: tensors_from_buffer only (views)", lambda: tensors_from_buffer(raw)),
            ]
            print(f"{size / 2**20:.0f} MiB, {len(expected)} tensors, median of {runs}")
            base = None
            for name, fn in rows:
                t = median_of(runs, fn)
                base = base or t
                print(f"  {name:52s} {t * 1000:8.1f} ms  {size / t / 2**30:6.2f} GiB/s  {base / t:5.2f}x safe_open")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        for name in os.listdir(folder):
            os.unlink(os.path.join(folder, name))
        os.rmdir(folder)


if __name__ == "__main__":
    main()
