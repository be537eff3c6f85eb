#!/usr/bin/env bash
# The peers benchmark on a machine that can reach no package index (a GPU
# node, say): pack the binaries here, carry the repository with the pack there,
# run the cold pull (and, if asked, the other sections) there.
#
#   Benchmarks/peers/offline.sh pack DIR   here: the shipped weightcache (built as
#                                          lib.sh builds it, stripped), weed and
#                                          rclone, each xz-compressed into DIR
#                                          (~62 MB together)
#   Benchmarks/peers/offline.sh run DIR    there, from the repository's root:
#                                          unpack, then Benchmarks/peers/run.sh
#
# There: a python3 with numpy, safetensors and matplotlib (the report's needs),
# curl, xz, GNU time (/usr/bin/time) and root for drop_caches. awscli, boto3 and
# Run:ai are not carried, so the default rows are weightcache pull (direct and
# buffered), rclone and the curl ceiling. Knobs of run.sh pass through
# (PEERS, SECTIONS, RUNS, WC_CONCURRENCY, ...); results go to RESULTS_DIR
# (default DIR/results). The weightcache binary links libcurl, liblz4,
# libxxhash and libxml2 dynamically: `ldd` says if the machine lacks one.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cmd=${1:-} dir=${2:-}
[ -n "$dir" ] || { echo "usage: $0 pack|run DIR" >&2; exit 2; }

case $cmd in
pack)
  # shellcheck source=Benchmarks/lib.sh
  . "$repo/Benchmarks/lib.sh"
  cd "$repo" && build_release
  mkdir -p "$dir"
  weed=$(command -v weed || true)
  # pyenv's shim is a script: ask pyenv for the binary behind it.
  if [ -n "$weed" ] && [ "$(head -c 4 "$weed" | tail -c 3)" != ELF ]; then weed=$(pyenv which weed 2>/dev/null || true); fi
  [ -n "$weed" ] || { echo "weed not found: bash scripts/s3-server.sh install" >&2; exit 1; }
  command -v rclone >/dev/null || { echo "rclone not found: apt-get install rclone" >&2; exit 1; }
  tmp=$(mktemp -d) && trap 'rm -rf "$tmp"' EXIT
  cp "$repo/.build-static/release/weightcache" "$tmp/weightcache" && strip "$tmp/weightcache"
  for pair in "weightcache:$tmp/weightcache" "weed:$weed" "rclone:$(command -v rclone)"; do
    log "packing ${pair%%:*}"
    xz -9 -T0 -c "${pair#*:}" > "$dir/${pair%%:*}.xz"
  done
  du -ch "$dir"/*.xz | tail -1
  ;;
run)
  dir=$(cd "$dir" && pwd)
  bin=$dir/bin
  mkdir -p "$bin" "$dir/venv/bin" "$dir/tmp"
  for b in weightcache weed rclone; do xz -dc "$dir/$b.xz" > "$bin/$b"; chmod +x "$bin/$b"; done
  if ldd "$bin/weightcache" | grep "not found"; then
    echo "the libraries above are missing here: carry them (from the packing machine) and set LD_LIBRARY_PATH" >&2
    exit 1
  fi
  # run.sh wants a venv's python: this one is the machine's own python3.
  printf '#!/bin/sh\nexec python3 "$@"\n' > "$dir/venv/bin/python" && chmod +x "$dir/venv/bin/python"
  export PATH=$bin:$PATH
  PEERS=${PEERS:-weightcache-pull weightcache-pull-buffered weightcache-preload rclone curl} \
    SECTIONS=${SECTIONS:-cold} PEERS_VENV=$dir/venv WEIGHTCACHE_BIN=$bin/weightcache \
    RESULTS_DIR=${RESULTS_DIR:-$dir/results} BENCH_TMPDIR=${BENCH_TMPDIR:-$dir/tmp} \
    bash "$repo/Benchmarks/peers/run.sh"
  ;;
*) echo "usage: $0 pack|run DIR" >&2; exit 2 ;;
esac
