#!/usr/bin/env python3
"""Reads one file of a model through the daemon, front to back, with the
Python client (clients/python on PYTHONPATH), then checks the bytes against
the original's SHA-256, so that a fast wrong answer cannot pass. Prints
"SECONDS MAXRSS_KIB CPU_SECONDS" of the reading alone, as lib.sh's `timed`
does. Used by read-through.sh.

    seqread.py MODEL PATH SHA256 --chunk-mib N   one read of N MiB at a time:
                                                 a reader that waits on each read
    seqread.py MODEL PATH SHA256 --pipelined     the whole file with read_into
                                                 (the client splits it and pipelines)
"""
import argparse
import hashlib
import resource
import sys
import time

from weightcache import Client

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("path")
ap.add_argument("sha256")
group = ap.add_mutually_exclusive_group(required=True)
group.add_argument("--chunk-mib", type=float)
group.add_argument("--pipelined", action="store_true")
a = ap.parse_args()


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


t0, c0 = time.perf_counter(), cpu()
with Client() as c:
    size = c.stat(a.model, a.path).size
    data = bytearray(size)
    view = memoryview(data)
    if a.pipelined:
        got = c.read_into(a.model, a.path, 0, view)
    else:
        chunk = int(a.chunk_mib * (1 << 20))
        got = 0
        while got < size:
            n = c.read_into(a.model, a.path, got, view[got:got + chunk])
            if n <= 0:
                break
            got += n
seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
if got != size:
    sys.exit(f"read {got} of {size} bytes")
del view
if hashlib.sha256(data).hexdigest() != a.sha256:
    sys.exit(f"{a.path}: the bytes read differ from the original")
print(f"{seconds:.6f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} {cpu_seconds:.3f}")
