#!/usr/bin/env bash
# The main job, end to end, on this machine: start a real S3 server (SeaweedFS
# on 127.0.0.1, SigV4 enforced), publish a generated safetensors model to it
# with `weightcache push`, start the daemon (`weightcache serve`) on a Unix
# socket, read a tensor through it before anything is staged (read-through),
# preload the model with a progress bar, and load every tensor through the
# Python client — by the passed file descriptor and by `read` — comparing each
# with the original; then `stats`, `ls`, and SIGTERM. Also pulls with the CLI,
# loads from `weightcache path`, and fetches one shard as a plain object
# checked by xxh3-128. Stops what it started.
# DEMO_SIZE_MIB sets the size of the big shard (default 1024); DEMO_CONFIGURATION
# debug or release (default) the build it uses.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

size_mib=${DEMO_SIZE_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/weightcache-demo.XXXXXX")
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
  bash scripts/s3-server.sh stop "$work/s3" || true
  rm -rf "$work"
}
trap cleanup EXIT

# DEMO_CONFIGURATION=debug reuses the test build (CI runs the demo after the tests).
configuration=${DEMO_CONFIGURATION:-release}
echo "== building weightcache ($configuration)"
swift build -c "$configuration" --product weightcache >/dev/null
wc=$(swift build -c "$configuration" --show-bin-path)/weightcache

echo "== starting the S3 server"
server_env=$(bash scripts/s3-server.sh start "$work/s3")
eval "$server_env"
export AWS_ENDPOINT_URL=$WEIGHTCACHE_TEST_S3_ENDPOINT AWS_REGION=$WEIGHTCACHE_TEST_S3_REGION
export AWS_ACCESS_KEY_ID=$WEIGHTCACHE_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$WEIGHTCACHE_TEST_S3_SECRET_KEY
export WEIGHTCACHE_MODELS=s3://demo-models/root WEIGHTCACHE_STAGING_DIRECTORY=$work/staging
echo "   $AWS_ENDPOINT_URL"

echo "== generating a model: 3 safetensors shards (the first ${size_mib} MiB), config, tokenizer"
python3 scripts/make-test-model.py "$work/model" --big-mib "$size_mib" --shards 3

echo "== weightcache push (files in parallel parts, then the manifest)"
"$wc" push --create-bucket "$work/model" demo/tiny-llm@v1

echo "== weightcache serve: the daemon, on $work/wc.sock"
export WEIGHTCACHE_SOCKET_PATH=$work/wc.sock WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES=$((size_mib + 512))MiB
"$wc" serve >"$work/serve.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$work/wc.sock" ] && break; sleep 0.1; done
export PYTHONPATH=$PWD/clients/python WEIGHTCACHE_SOCKET=$work/wc.sock

echo "== a cold read through the socket: the first tensor, before anything is staged (read-through)"
python3 - "$work/model" <<'PY'
import os, sys, json, struct, time
from weightcache import Client
name = "model-00001-of-00003.safetensors"
with Client() as c:
    t = time.perf_counter()
    head = c.read("demo/tiny-llm@v1", name, 0, 8)
    (n,) = struct.unpack("<Q", head)
    header = json.loads(c.read("demo/tiny-llm@v1", name, 8, n))
    key, meta = next((k, v) for k, v in header.items() if k != "__metadata__")
    start, end = meta["data_offsets"]
    data = c.read("demo/tiny-llm@v1", name, 8 + n + start, end - start)
    took = time.perf_counter() - t
    with open(os.path.join(sys.argv[1], name), "rb") as f:
        f.seek(8 + n + start)
        assert f.read(end - start) == data
    print(f"   {key}: {len(data)} bytes right, first tensor in {took * 1000:.0f} ms; "
          f"{c.stats()['ram']['bytesFromStore']} bytes came straight from the store")
PY

echo "== weightcache preload (the daemon pulls: parallel ranged GETs, every block checked, renamed into blobs/)"
"$wc" preload demo/tiny-llm@v1 --pin

echo "== every tensor through the Python client: open (fd passed, safetensors on /proc/self/fd) and read"
python3 - "$work/model" <<'PY'
import os, sys
import numpy as np
from safetensors.numpy import load_file
from weightcache import Client
from weightcache.tensors import load_tensors
src = sys.argv[1]
count = 0
with Client() as c:
    for f in c.resolve("demo/tiny-llm@v1").files:
        if not f.path.endswith(".safetensors"):
            continue
        original = load_file(os.path.join(src, f.path))
        for via in ("open", "read"):
            got = load_tensors(c, "demo/tiny-llm@v1", f.path, via=via)
            assert got.keys() == original.keys(), f.path
            for key in original:
                assert got[key].dtype == original[key].dtype and np.array_equal(got[key], original[key]), key
                count += 1
print(f"   {count} tensor loads identical (each tensor by open and by read)")
PY
"$wc" ls
"$wc" stats
kill -TERM "$daemon" && wait "$daemon" && daemon=""
echo "   daemon stopped (SIGTERM, exit 0), socket removed: $([ -e "$work/wc.sock" ] && echo no || echo yes)"

echo "== weightcache pull (the CLI, on the same staging directory: staged already, nothing to fetch)"
"$wc" pull demo/tiny-llm@v1
snapshot=$("$wc" path demo/tiny-llm@v1)
echo "   weightcache path -> $snapshot"
ls -l "$snapshot"

echo "== loading every tensor from the snapshot with safetensors, against the originals"
python3 - "$work/model" "$snapshot" <<'PY'
import os, sys
import numpy as np
from safetensors.numpy import load_file
src, dst = sys.argv[1], sys.argv[2]
count = 0
for name in sorted(os.listdir(src)):
    if not name.endswith(".safetensors"):
        continue
    a, b = load_file(os.path.join(src, name)), load_file(os.path.join(dst, name))
    assert a.keys() == b.keys(), name
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        count += 1
print(f"   {count} tensors identical")
PY

echo "== weightcache fetch of one shard as a plain object, checked by xxh3-128"
"$wc" fetch s3://demo-models/root/demo/tiny-llm/v1/model-00001-of-00003.safetensors "$work/fetched.safetensors"
expected=$("$wc" hash "$work/model/model-00001-of-00003.safetensors" | cut -d' ' -f1)
actual=$("$wc" hash "$work/fetched.safetensors" | cut -d' ' -f1)
[ "$expected" = "$actual" ] || { echo "== MISMATCH: $expected != $actual" >&2; exit 1; }
echo "   xxh3-128 $actual matches"
echo "== OK"
