#!/usr/bin/env bash
# The whole test suite: installs what it needs, starts a real SeaweedFS S3
# server on 127.0.0.1 (SigV4 enforced), runs every test against it, and stops
# what it started, pass or fail.  Usage: bash scripts/test.sh [swift test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

state=$(mktemp -d "${TMPDIR:-/tmp}/weightcache-test.XXXXXX")
cleanup() {
  bash scripts/s3-server.sh stop "$state/s3" || true
  rm -rf "$state"
}
trap cleanup EXIT

# The server's endpoint and keys, as WEIGHTCACHE_TEST_S3_* for the tests.
server_env=$(bash scripts/s3-server.sh start "$state/s3")  # fails the script if the server does not start
eval "$server_env"
echo "test: S3 server at $WEIGHTCACHE_TEST_S3_ENDPOINT" >&2

swift build --build-tests
swift test --skip-build "$@"

# The fault-injecting S3 proxy's own tests (the Swift tests above use it).
python3 -m pytest -q -p no:cacheprovider scripts/test_faultproxy.py

# Deployment files: YAML lint (syntax, duplicate keys) and the Dockerfile linter.
python3 -m yamllint -d "{extends: relaxed, rules: {line-length: disable}}" --strict deploy/kubernetes
hadolint deploy/docker/Dockerfile

# The README's main job, end to end, with a small model and the debug build.
DEMO_SIZE_MIB=32 DEMO_CONFIGURATION=debug bash scripts/demo.sh

# The peers benchmark at CI size (a ~22 MiB model, one run, no torch), so that
# it does not rot: it fails on a tool error or wrong bytes, never on speed.
SMOKE=1 WEIGHTCACHE_BIN="$(swift build --show-bin-path)/weightcache" bash Benchmarks/peers/run.sh
