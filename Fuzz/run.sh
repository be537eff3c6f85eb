#!/usr/bin/env bash
# Builds the libFuzzer target (Swift's -sanitize=fuzzer) and runs it for
# FUZZ_SECONDS (default 60) from a corpus of valid frames; prints libFuzzer's
# last lines (executions, coverage) and exits non-zero on a crash, whose input
# libFuzzer leaves in Fuzz/crash-*.
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --scratch-path .build -Xswiftc -sanitize=fuzzer -Xswiftc -use-ld=lld >&2  # gold trips on libFuzzer's main
binary=$(swift build -c release --scratch-path .build -Xswiftc -sanitize=fuzzer -Xswiftc -use-ld=lld --show-bin-path)/WireFuzz
mkdir -p corpus
# Seeds: a hello and a read, as the spec's example frames.
printf '\x1b\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0b\x00weightcache\x01\x00\x01\x00\x00\x00' >corpus/hello
printf '\x22\x00\x00\x00\x05\x00\x00\x00\x02\x00\x00\x00\x04\x00tiny\x04\x00a.st\x00\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00' >corpus/read
"$binary" corpus -max_total_time="${FUZZ_SECONDS:-60}" -max_len=4096 -print_final_stats=1 2>&1 | tail -n 20
