#!/usr/bin/env bash
# hostile-clients: a well-behaved client's 4 KiB read latency alone and then
# while a connection flood, garbage frames, idle holders and vanishing readers
# attack the daemon, in one run (issue 8, item 4); then the daemon's
# descriptors and RSS against their values before the attack. Target: p99
# under attack within 3x of the unloaded p99, descriptors and RSS back.
#
#   Benchmarks/hostile-clients.sh        SECONDS_EACH=5 RUNS=3
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"
runs=${RUNS:-3}

build_release  # weightcache as shipped, into $bin (lib.sh)
swift build -c release --scratch-path "$repo/.build-release" --product hostile-bench >&2
start_server
mkdir -p "$work/model"
random_file "$work/model/weights.bin" 256
export WEIGHTCACHE_MODELS=s3://bench-hostile/root
"$bin" push --create-bucket "$work/model" bench/hostile@main >&2
export WEIGHTCACHE_STAGING_DIRECTORY=$work/staging WEIGHTCACHE_SOCKET_PATH=$work/wc.sock WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES=512MiB
"$bin" serve >"$work/serve.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; bash "$repo/scripts/s3-server.sh" stop "$work/s3" >&2 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$work/wc.sock" ] && break; sleep 0.1; done
"$bin" preload bench/hostile@main --tier ram >&2

mkdir -p Benchmarks/results
result=Benchmarks/results/hostile-clients-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "hostile-clients: $(nproc) cores, $(git rev-parse --short HEAD), daemon.maxConnections 256, ${runs} runs"
  for run in $(seq "$runs"); do
    echo "run $run:"
    "$repo/.build-release/release/hostile-bench" "$work/wc.sock" bench/hostile@main weights.bin "$daemon" "${SECONDS_EACH:-5}"
  done
  "$bin" stats --json | python3 -c 'import json, sys; s = json.load(sys.stdin); print("daemon connections:", s["connections"], "errors:", s["requests"]["errorsByCode"])'
} | tee "$result"
