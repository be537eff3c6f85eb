#!/usr/bin/env bash
# The main job, end to end, on this machine: start a real S3 server (SeaweedFS
# on 127.0.0.1, SigV4 enforced), publish a generated "model" to it, fetch it back
# with weightcache's parallel downloader, and check every byte by xxh3-128.
# Stops what it started. DEMO_SIZE_MIB sets the size of the big shard (default 1024).
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
eval "$(bash scripts/s3-server.sh start "$work/s3")"
export AWS_ENDPOINT_URL=$WEIGHTCACHE_TEST_S3_ENDPOINT AWS_REGION=$WEIGHTCACHE_TEST_S3_REGION
export AWS_ACCESS_KEY_ID=$WEIGHTCACHE_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$WEIGHTCACHE_TEST_S3_SECRET_KEY
echo "   $AWS_ENDPOINT_URL"

echo "== generating a model: one ${size_mib} MiB shard and a config file"
mkdir -p "$work/model"
head -c $((size_mib << 20)) /dev/urandom >"$work/model/model-00001-of-00001.bin"
echo '{"architectures": ["DemoForCausalLM"], "torch_dtype": "bfloat16"}' >"$work/model/config.json"

echo "== uploading (multipart, parallel parts)"
"$wc" put --create-bucket "$work/model/model-00001-of-00001.bin" s3://demo-models/demo/main/
"$wc" put "$work/model/config.json" s3://demo-models/demo/main/
"$wc" ls s3://demo-models/demo/

echo "== fetching the whole prefix back (parallel ranged GETs)"
"$wc" fetch s3://demo-models/demo/main/ "$work/fetched"

echo "== verifying xxh3-128 of every file"
(cd "$work/model" && "$wc" hash *) | sort -k2 >"$work/expected"
(cd "$work/fetched" && "$wc" hash *) | sort -k2 >"$work/actual"
cat "$work/actual"
if diff -u "$work/expected" "$work/actual"; then
  echo "== OK: every byte matches"
else
  echo "== MISMATCH" >&2
  exit 1
fi
