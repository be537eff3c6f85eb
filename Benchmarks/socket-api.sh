#!/usr/bin/env bash
# socket-api: the daemon's socket API against the kernel paths a client could
# use instead, in one run on this machine (issue 5's benchmark):
#   (a) `read` of a RAM-resident 1 GiB file over the socket, 8 MiB per
#       request, vs pread of the staged file from the page cache;
#   (b) `open` (fd passed with SCM_RIGHTS) + mmap + touch of every page vs
#       open + mmap of the staged file directly;
#   (c) 4 KiB random `read` latency, p50 and p99, with 1 and 8 clients.
# A release daemon serves a 1 GiB model preloaded to RAM; socket-bench
# interleaves the paths round by round and prints medians, min, max, ratios.
# Targets: (a) >= 0.60 of pread, (b) >= 0.95 of direct mmap, (c) p99 <= 100 µs at 8 clients.
#
#   Benchmarks/socket-api.sh        RUNS=5 SIZE_MIB=1024
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"

runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}

log "building release binaries (weightcache, socket-bench)"
build_release  # weightcache as shipped, into $bin (lib.sh)
swift build -c release --scratch-path "$repo/.build-release" --product socket-bench >&2
start_server

push_model bench-socket bench/socket@main "$size_mib"

export WEIGHTCACHE_STAGING_DIRECTORY=$work/staging WEIGHTCACHE_SOCKET_PATH=$work/wc.sock
export WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES=$((size_mib + 256))MiB
"$bin" serve >"$work/serve.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; bash "$repo/scripts/s3-server.sh" stop "$work/s3" >&2 || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -S "$work/wc.sock" ] && break; sleep 0.1; done
"$bin" preload bench/socket@main --tier ram >&2
staged=$(readlink -f "$("$bin" path bench/socket@main)/weights.bin")

mkdir -p "$repo/Benchmarks/results"
result=$repo/Benchmarks/results/socket-api-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "socket-api: $(nproc) cores, $(git -C "$repo" rev-parse --short HEAD), RAM tier holds the file"
  "$repo/.build-release/release/socket-bench" "$work/wc.sock" bench/socket@main weights.bin "$staged" "$runs"
  "$bin" stats --json | python3 -c 'import json, sys; r = json.load(sys.stdin)["ram"]; print("daemon RAM tier: hits", r["hits"], "misses", r["misses"], "used MiB", r["usedBytes"] >> 20)'
} | tee "$result"
kill -TERM $daemon
wait $daemon || true
