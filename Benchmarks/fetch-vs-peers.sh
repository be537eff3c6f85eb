#!/usr/bin/env bash
# fetch-vs-peers: how fast `weightcache fetch` pulls one big object compared
# with the tools people would otherwise use (curl, one stream; aws s3 cp,
# awscli's own parallel ranged download), all against the same object on the
# same local SeaweedFS S3 server, in one run, so the numbers are comparable.
#
#   Benchmarks/fetch-vs-peers.sh
#
# Environment knobs:
#   RUNS=3         timed runs per tool (interleaved round-robin across tools)
#   WC_ARGS=""     extra flags for `weightcache fetch`, e.g. "--concurrency 4"
#   SIZE_MIB=2048  object size; the comparison is meant at 2 GiB, smaller is
#                  only for smoke-testing the script itself
#   BENCH_TMPDIR   where the server's data and the downloads go (default
#                  $TMPDIR or /tmp); every download lands on this one disk
#
# The table goes to stdout and to Benchmarks/results/fetch-vs-peers-<UTC>.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"  # weightcache finds ./config.json from here; env overrides its endpoint

runs=${RUNS:-3}
wc_args=${WC_ARGS:-}
size_mib=${SIZE_MIB:-2048}
size_bytes=$((size_mib << 20))
bucket=bench
key=blob-${size_mib}MiB.bin
bin=$repo/.build-release/release/weightcache

[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer, got '$runs'" >&2; exit 2; }

log() { printf '[fetch-vs-peers] %s\n' "$*" >&2; }

# --- 1. release binary --------------------------------------------------------
# A separate scratch path, so this never fights over .build/ with debug builds.
# SwiftPM decides what is outdated; when nothing is, this takes seconds.
log "building release binary (swift build -c release --scratch-path .build-release)"
swift build -c release --scratch-path .build-release --product weightcache >&2
[ -x "$bin" ] || { echo "no binary at $bin after the build" >&2; exit 1; }

# --- peers --------------------------------------------------------------------
if ! command -v aws >/dev/null 2>&1; then
  log "aws not found; installing awscli from PyPI"
  python3 -m pip install -q awscli >&2
  hash -r
fi
command -v aws >/dev/null 2>&1 || { echo "aws still not found after pip install" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "curl not found" >&2; exit 1; }

# --- 2. our own S3 server, always torn down -----------------------------------
work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/weightcache-bench.XXXXXX")
state=$work/s3
server_started=0
cleanup() {
  local rc=$?
  if [ "$server_started" = 1 ]; then
    "$repo/scripts/s3-server.sh" stop "$state" >&2 || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # run the EXIT trap on Ctrl-C / kill too

log "starting SeaweedFS in $state"
server_started=1
server_env=$("$repo/scripts/s3-server.sh" start "$state")
eval "$server_env"

endpoint=$WEIGHTCACHE_TEST_S3_ENDPOINT
region=$WEIGHTCACHE_TEST_S3_REGION
ak=$WEIGHTCACHE_TEST_S3_ACCESS_KEY
sk=$WEIGHTCACHE_TEST_S3_SECRET_KEY
# weightcache and awscli both read these. AWS_DEFAULT_REGION outranks
# AWS_REGION in both, so set both to the same value.
export AWS_ENDPOINT_URL=$endpoint AWS_ACCESS_KEY_ID=$ak AWS_SECRET_ACCESS_KEY=$sk
export AWS_REGION=$region AWS_DEFAULT_REGION=$region
# No stray ~/.aws profile may change awscli's transfer defaults (chunk size,
# concurrency) between machines: point it at files that do not exist.
export AWS_CONFIG_FILE=$work/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$work/no-aws-credentials
unset AWS_PROFILE

# --- 3. the object ------------------------------------------------------------
# Random bytes, so nothing on the way can compress or dedupe them. AES-CTR over
# /dev/zero is ~10x faster than /dev/urandom and just as incompressible.
src=$work/source.bin
log "generating $size_mib MiB of random bytes"
if command -v openssl >/dev/null 2>&1; then
  openssl enc -aes-128-ctr -nosalt -K "$(openssl rand -hex 16)" -iv "$(openssl rand -hex 16)" \
    </dev/zero 2>/dev/null | head -c "$size_bytes" >"$src" || true  # head closing the pipe is expected
else
  head -c "$size_bytes" /dev/urandom >"$src"
fi
[ "$(stat -c %s "$src")" = "$size_bytes" ] || { echo "generated file has the wrong size" >&2; exit 1; }

src_hash=$("$bin" hash "$src" | awk '{print $1}')
log "source xxh3-128 $src_hash; uploading to s3://$bucket/$key"
"$bin" put --create-bucket "$src" "s3://$bucket/$key" >&2
# The server now holds a copy; dropping ours keeps the disk at two copies
# (server + one download) at any moment.
rm -f "$src"

# --- 4. timed runs ------------------------------------------------------------
out=$work/out.bin
tools=(weightcache curl aws)

# One download of the object to $out. Output goes to a log that is shown only
# if the tool fails: progress bars would only add noise.
fetch_with() {
  case $1 in
    weightcache)
      # shellcheck disable=SC2086  # WC_ARGS is meant to split into flags
      timed "$bin" fetch $wc_args "s3://$bucket/$key" "$out" ;;
    curl)
      # curl 7.88 signs but does not send x-amz-content-sha256 itself, which
      # S3 (and SeaweedFS) require; --fail turns a 403 into an error.
      timed curl -sS --fail --aws-sigv4 "aws:amz:$region:s3" --user "$ak:$sk" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o "$out" "$endpoint/$bucket/$key" ;;
    aws)
      # AWS_CA_BUNDLE is set machine-wide here and some tools choke on it.
      timed env -u AWS_CA_BUNDLE aws s3 cp --only-show-errors --endpoint-url "$endpoint" \
        "s3://$bucket/$key" "$out" ;;
  esac
}

# Runs "$@" and prints "SECONDS MAXRSS_KIB": wall time from fork to exit and
# the child's peak resident memory (wait4's rusage). Python starts before the
# clock does, so its own start-up is not timed.
timed() {
  python3 - "$@" <<'PY'
import os, sys, time
argv = sys.argv[1:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
t1 = time.perf_counter()
print(f"{t1 - t0:.6f} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
PY
}

# Load average around the timed runs goes into the table: on a small shared
# machine, someone else's build or test run is the usual cause of odd numbers.
# One untimed round first: the server's read path warms up after the upload
# (curl's first timed run was always its slowest without this).
for tool in "${tools[@]}"; do
  rm -f "$out" "$out.partial"
  fetch_with "$tool" >"$work/$tool.log" 2>&1 || { echo "$tool failed in the warm-up round:" >&2; cat "$work/$tool.log" >&2; exit 1; }
  log "warm-up $(printf '%-11s' "$tool") done"
done
rm -f "$out"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A mibs  # tool -> space-separated MiB/s per run
declare -A rss   # tool -> peak RSS in MiB, the largest over its runs
for tool in "${tools[@]}"; do mibs[$tool]=""; rss[$tool]=0; done

for ((run = 1; run <= runs; run++)); do
  # Round-robin, so slow drift on the machine (thermal, background work)
  # spreads over every tool instead of landing on whichever ran last.
  for tool in "${tools[@]}"; do
    rm -f "$out" "$out.partial"
    # Our previous download's dirty pages are gone with its unlink; flushing
    # anything else now keeps other writeback out of the timed window.
    sync
    if ! fetch_with "$tool" >"$work/$tool.log" 2>&1; then
      echo "$tool failed on run $run; its output:" >&2
      cat "$work/$tool.log" >&2
      exit 1
    fi
    read -r seconds maxrss_kib < <(tail -n 1 "$work/$tool.log")
    peak=$((maxrss_kib / 1024))
    [ "$peak" -gt "${rss[$tool]}" ] && rss[$tool]=$peak
    got=$(stat -c %s "$out" 2>/dev/null || echo missing)
    if [ "$run" = 1 ]; then
      # Checked once per tool, outside the timed window.
      [ "$got" = "$size_bytes" ] || { echo "$tool wrote $got bytes, expected $size_bytes" >&2; exit 1; }
      if [ "$tool" = weightcache ]; then
        out_hash=$("$bin" hash "$out" | awk '{print $1}')
        [ "$out_hash" = "$src_hash" ] || { echo "weightcache output xxh3 $out_hash != source $src_hash" >&2; exit 1; }
      fi
    fi
    rate=$(awk -v b="$size_bytes" -v t="$seconds" 'BEGIN { printf "%.1f", b / 1048576 / t }')
    mibs[$tool]+="$rate "
    log "run $run/$runs  $(printf '%-11s' "$tool") $(printf '%.3f' "$seconds") s  $rate MiB/s"
    rm -f "$out"
  done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 5. the table -------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$repo/Benchmarks/results"
result=$repo/Benchmarks/results/fetch-vs-peers-$stamp.txt

{
  echo "# fetch-vs-peers  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD -- Sources 2>/dev/null || echo ' (+uncommitted Sources changes)')"
  echo "nproc:       $(nproc)"
  echo "cpu:         $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel:      $(uname -sr)"
  echo "curl:        $(curl --version | head -n 1)"
  echo "aws:         $(env -u AWS_CA_BUNDLE aws --version 2>&1 | head -n 1)"
  echo "weed:        $(weed version 2>/dev/null | head -n 1 || echo '?')"
  echo "object:      $size_mib MiB random bytes, s3://$bucket/$key on SeaweedFS at $endpoint (server warm after upload)"
  echo "weightcache: fetch ${wc_args:-(defaults from config.json)}"
  echo "loadavg:     $load_before before the timed runs, $load_after after"
  echo "runs:        $runs per tool after one untimed warm-up round, interleaved; MiB/s = size / wall time of the whole command"
  echo
  for tool in "${tools[@]}"; do echo "$tool ${rss[$tool]} ${mibs[$tool]}"; done | python3 -c '
import statistics, sys
rows = [(l.split()[0], l.split()[1], [float(x) for x in l.split()[2:]]) for l in sys.stdin if l.strip()]
runs = len(rows[0][2])
base = statistics.median(rows[0][2])
head = ["tool"] + [f"run{i + 1}" for i in range(runs)] + ["median", "vs wc", "peak RSS MiB"]
body = [[t] + [f"{x:.1f}" for x in xs] + [f"{statistics.median(xs):.1f}", f"{statistics.median(xs) / base:.2f}", rss]
        for t, rss, xs in rows]
widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
print(fmt(head)); print("  ".join("-" * w for w in widths))
for r in body: print(fmt(r))
print("(MiB/s; vs wc = median / weightcache median; peak RSS = largest over the timed runs)")
'
} | tee "$result"
log "written to ${result#"$repo"/}"
