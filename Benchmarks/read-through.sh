#!/usr/bin/env bash
# read-through: reading a model through the daemon before it is staged. In one
# run, on the same model file on a local SeaweedFS, times
#   - `weightcache pull` of the model into an empty staging directory: the
#     node's rate from the store to NVMe, the baseline;
#   - a reader that waits on each read (one 1 MiB read at a time, then one
#     4 MiB read at a time) through a fresh daemon with empty staging: its
#     blocks come from the store (read-through), ahead of it by the cache's
#     read-ahead;
#   - the Python client's read_into of the whole file (pipelined requests),
# interleaved, RUNS times each after one untimed warm-up round, and prints the
# medians and their ratio to the pull. The readers' times are their own
# (Benchmarks/seqread.py), from connect to the last byte; each run's bytes are
# checked against the original. The daemon also starts the model's pull in the
# background after a cold read (held back while reads go on, at most 3 s), as
# in production.
#
#   Benchmarks/read-through.sh        RUNS=5 SIZE_MIB=1024
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"

runs=${RUNS:-5}
size_mib=${SIZE_MIB:-1024}

build_release
start_server  # sets $work, exports AWS_* for weightcache

push_model bench-read-through bench/model@main "$size_mib" sha256
sha=$model_sha256

export PYTHONPATH=$repo/clients/python WEIGHTCACHE_SOCKET_PATH=$work/wc.sock WEIGHTCACHE_SOCKET=$work/wc.sock
export WEIGHTCACHE_STAGING_DIRECTORY=$work/staging WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES=$((size_mib + 512))MiB
daemon=
stop_daemon() {
  [ -n "$daemon" ] || return 0
  kill -TERM "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  daemon=
}
trap 'stop_daemon; bash "$repo/scripts/s3-server.sh" stop "$work/s3" >&2 || true; rm -rf "$work"' EXIT

# A fresh daemon on empty staging, then the reader.
read_through() {
  "$bin" serve >"$work/serve.log" 2>&1 &
  daemon=$!
  for _ in $(seq 100); do [ -S "$work/wc.sock" ] && break; sleep 0.1; done
  python3 "$repo/Benchmarks/seqread.py" bench/model@main weights.bin "$sha" "$@"
  local status=$?
  stop_daemon
  return $status
}

run_tool() {
  rm -rf "$work/staging"
  sync
  case $1 in
    pull) timed "$bin" pull bench/model@main ;;
    read-1) read_through --chunk-mib 1 ;;
    read-4) read_through --chunk-mib 4 ;;
    piped) read_through --pipelined ;;
  esac
}

run_interleaved pull read-1 read-4 piped
print_table "read-through" "model: one ${size_mib} MiB file, not staged; pull = weightcache pull into empty staging; read-N = one N MiB read at a time through a fresh daemon (read-through); piped = the Python client's read_into of the whole file (pipelined); CPU s of the reader is the Python client's" pull read-1 read-4 piped
