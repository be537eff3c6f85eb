#!/usr/bin/env bash
# pull-vs-fetch: what verification and staging cost. In one run, on the same
# 2 GiB model file on a local SeaweedFS, times
#   - `weightcache fetch` of the file's object (parallel ranged GETs, no checks),
#   - `weightcache fetch --sync`, the same made durable (fsync before rename),
#   - `weightcache pull` of the model into an empty staging directory (the same
#     GETs, plus per-block xxh3-64 checks of the bytes as they are written, the
#     rename into blobs/ with its unsynced marker, and the snapshot:
#     staging.durability=deferred, the default), and
#   - `weightcache pull --sync`, the same with an fsync before the rename
#     (staging.durability=immediate): compare it with fetch --sync,
# interleaved, RUNS times each after one untimed warm-up round, and prints the
# medians and their ratio. Target: pull within 10% of fetch.
#
#   Benchmarks/pull-vs-fetch.sh        RUNS=5 SIZE_MIB=2048 WC_ARGS="" as in fetch-vs-peers.sh
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"

runs=${RUNS:-5}
size_mib=${SIZE_MIB:-2048}
wc_args=${WC_ARGS:-}

build_release
start_server  # sets $work, exports AWS_* for weightcache

push_model bench-models bench/model@main "$size_mib" config
key=root/bench/model/main/weights.bin

run_tool() {
  rm -rf "$work/staging" "$work/out.bin"
  sync
  case $1 in
    fetch)
      # shellcheck disable=SC2086
      timed "$bin" fetch $wc_args "s3://bench-models/$key" "$work/out.bin" ;;
    fetch-sync)
      # The same, made durable like a pull: what verification alone costs is pull vs this.
      # shellcheck disable=SC2086
      timed "$bin" fetch --sync $wc_args "s3://bench-models/$key" "$work/out.bin" ;;
    pull)
      # shellcheck disable=SC2086
      WEIGHTCACHE_STAGING_DIRECTORY=$work/staging timed "$bin" pull $wc_args bench/model@main ;;
    pull-sync)
      # staging.durability=immediate for this pull: fsync before publishing.
      # shellcheck disable=SC2086
      WEIGHTCACHE_STAGING_DIRECTORY=$work/staging timed "$bin" pull --sync $wc_args bench/model@main ;;
  esac
}

run_interleaved fetch fetch-sync pull pull-sync
print_table "pull-vs-fetch" "model: ${size_mib} MiB weights.bin + config.json, pull into an empty staging dir each run" fetch fetch-sync pull pull-sync
