#!/usr/bin/env bash
# first-touch: what the RAM tier pays to fill memory it never touched before,
# for each way of backing the arena (Benchmarks/first-touch.c): a /dev/shm
# file (4 KiB pages, and with MADV_POPULATE_WRITE), anonymous 4 KiB pages (and
# populated), anonymous huge pages (what the arena uses since 2026-12-04).
# Each in a fresh process: ROUNDS rounds back to back, then each mode once
# more after IDLE seconds of quiet (a VM whose host takes back free guest
# memory makes the next first touch dearer). No server, no weightcache build:
# a C compiler only. Writes results/first-touch-<UTC>.txt.
#
#   ROUNDS=3 IDLE=30 SIZE_MIB=256 Benchmarks/first-touch.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rounds=${ROUNDS:-3}
idle=${IDLE:-30}
size=${SIZE_MIB:-256}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -o "$work/first-touch" "$here/first-touch.c"
out=$here/results/first-touch-$(date -u +%Y%m%dT%H%M%SZ).txt
mkdir -p "$here/results"
{
  echo "# first-touch, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nproc) cores, $(awk '/MemTotal/ {print $2, $3}' /proc/meminfo), kernel $(uname -r)"
  for f in enabled defrag shmem_enabled; do
    echo "# transparent_hugepage/$f: $(cat /sys/kernel/mm/transparent_hugepage/$f 2>/dev/null || echo n/a)"
  done
  echo "# free page reporting order: $(cat /sys/module/page_reporting/parameters/page_reporting_order 2>/dev/null || echo none)"
  echo "## back to back, $rounds rounds"
  for _ in $(seq "$rounds"); do
    for mode in 0 1 2 3 4; do "$work/first-touch" "$mode" "$size"; done
  done
  echo "## each after ${idle} s idle"
  for mode in 4 2 0 3 1; do
    sleep "$idle"
    "$work/first-touch" "$mode" "$size"
  done
} | tee "$out"
echo "wrote $out"
