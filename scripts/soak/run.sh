#!/usr/bin/env bash
# The long versions of the reliability suite (issue 8), on this machine:
#   - load: 64 clients reading random tensors for 60 s (CI: 5 s);
#   - crash: kill -9 of the daemon at 20 random moments during a preload and
#     verifying reads (CI: 5);
#   - fuzz: the coverage-guided libFuzzer run of the frame decoder (Fuzz/), for
#     FUZZ_SECONDS (default 300), when the toolchain can build it.
# Each prints what it tried and what happened; the summary lines go to
# Benchmarks/results/soak-<UTC>.txt. Starts (and stops) its own S3 server.
#
#   bash scripts/soak/run.sh        LOAD_SECONDS=60 LOAD_CLIENTS=64 CRASH_ROUNDS=20 FUZZ_SECONDS=300
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
bash scripts/setup.sh

state=$(mktemp -d "${TMPDIR:-/tmp}/weightcache-soak.XXXXXX")
trap 'bash scripts/s3-server.sh stop "$state/s3" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
eval "$(bash scripts/s3-server.sh start "$state/s3")"

mkdir -p Benchmarks/results
result=Benchmarks/results/soak-$(date -u +%Y%m%dT%H%M%SZ).txt
echo "soak: $(nproc) cores, $(git rev-parse --short HEAD), $(date -u)" | tee "$result"

swift build --build-tests >/dev/null

echo "== load: ${LOAD_CLIENTS:-64} clients, ${LOAD_SECONDS:-60} s" | tee -a "$result"
WEIGHTCACHE_LOAD_CLIENTS=${LOAD_CLIENTS:-64} WEIGHTCACHE_LOAD_SECONDS=${LOAD_SECONDS:-60} \
  swift test --skip-build --filter LoadTests 2>&1 | grep -E "^load:|error|passed \(|failed \(" | tee -a "$result"

echo "== crash: kill -9 x ${CRASH_ROUNDS:-20}" | tee -a "$result"
WEIGHTCACHE_CRASH_ROUNDS=${CRASH_ROUNDS:-20} \
  swift test --skip-build --filter DaemonCrashTests 2>&1 | grep -E "error|passed \(|failed \(" | tee -a "$result"

if [ -x Fuzz/run.sh ] || [ -f Fuzz/run.sh ]; then
  echo "== fuzz: the frame decoder, ${FUZZ_SECONDS:-300} s" | tee -a "$result"
  FUZZ_SECONDS=${FUZZ_SECONDS:-300} bash Fuzz/run.sh 2>&1 | tail -n 5 | tee -a "$result" || true
fi
echo "== done: $result"
