#!/usr/bin/env bash
# The main job, end to end, on this machine: start a real S3 server (SeaweedFS
# on 127.0.0.1, SigV4 enforced), publish a generated safetensors model to it
# with `weightcache push`, pull it into a staging directory (verified block by
# block), and load every tensor from `weightcache path` with the real
# safetensors library, comparing each with the original. Also fetches one shard
# as a plain object and checks it by xxh3-128. Stops what it started.
# DEMO_SIZE_MIB sets the size of the big shard (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

size_mib=${DEMO_SIZE_MIB:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/weightcache-demo.XXXXXX")
cleanup() {
  bash scripts/s3-server.sh stop "$work/s3" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building weightcache (release)"
swift build -c release --product weightcache >/dev/null
wc=$(swift build -c release --show-bin-path)/weightcache

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

echo "== weightcache pull (parallel ranged GETs, every block checked, then renamed into blobs/)"
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

echo "== a second pull: everything is staged already"
"$wc" pull demo/tiny-llm@v1 >/dev/null

echo "== weightcache fetch of one shard as a plain object, checked by xxh3-128"
"$wc" fetch s3://demo-models/root/demo/tiny-llm/v1/model-00001-of-00003.safetensors "$work/fetched.safetensors"
expected=$("$wc" hash "$work/model/model-00001-of-00003.safetensors" | cut -d' ' -f1)
actual=$("$wc" hash "$work/fetched.safetensors" | cut -d' ' -f1)
[ "$expected" = "$actual" ] || { echo "== MISMATCH: $expected != $actual" >&2; exit 1; }
echo "   xxh3-128 $actual matches"
echo "== OK"
