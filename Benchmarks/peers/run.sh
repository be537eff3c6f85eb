#!/usr/bin/env bash
# peers: weightcache against the tools people would otherwise use, side by
# side, in one run, against the same objects on one local SeaweedFS S3 server:
#
#   1. cold pull, S3 -> local, of a ~2.1 GiB 4-shard safetensors model
#      (TinyLlama-1.1B shapes): weightcache pull; weightcache preload through a
#      fresh daemon; aws s3 cp --recursive; boto3's TransferManager (8 threads,
#      8 MiB parts); rclone copy (8 streams); the Run:ai model streamer (into
#      memory); and the server's ceiling, curl with 8 and 16 parallel 8 MiB
#      ranged GETs to /dev/null in one process;
#   2. every tensor, local -> process: the Python client (via="open" and
#      via="read") vs safetensors.safe_open on the staged files, with the page
#      cache dropped (fresh daemon) and warm;
#   3. time to the first tensor of a cold model: read-through the daemon vs
#      weightcache pull then safe_open;
#   4. the daemon's peak RSS (VmHWM) during each cold preload.
#
# Every figure is the median of RUNS runs (min and max shown) after one
# untimed warm-up round that also checks content, tools interleaved round by
# round. Writes results.json, results.md and results.png to RESULTS_DIR, and a
# copy of the table to Benchmarks/results/peers-<UTC>.md. Fails if a tool fails
# or delivers the wrong bytes; speed targets are reported, never asserted.
#
#   Benchmarks/peers/run.sh                    the full run (root: drops caches)
#   SMOKE=1 Benchmarks/peers/run.sh            CI: ~24 MiB model, RUNS=1, no torch
#
# Environment knobs:
#   RUNS=3            timed runs per figure (SMOKE: 1)
#   PEERS="weightcache-pull weightcache-pull-buffered weightcache-preload aws boto3 rclone runai curl"
#                     the cold-pull rows to run (SMOKE default: all but runai)
#   SECTIONS="cold warm ttft"   which parts to run (memory comes with preload)
#   WEIGHTCACHE_BIN   use this binary instead of building .build-static (see lib.sh)
#   PEERS_VENV        the Python venv for the peers (default Benchmarks/peers/.venv;
#                     created and filled from requirements*.txt when missing)
#   RESULTS_DIR       where results.{json,md,png} go (default Benchmarks/peers;
#                     SMOKE: ${TMPDIR:-/tmp}/weightcache-peers-smoke)
#   MODEL_MIB         model size (default: full TinyLlama shapes; SMOKE: 25, about 22 MiB)
#   PEERS_RCLONE_CUTOFF=32M   rclone --multi-thread-cutoff (its default, 250 MiB, gives the
#                     shards 2 streams, not 8: see bench.py)
#   BENCH_TMPDIR      where the server's data, the model and the downloads go
#   FAR=1             every tool reaches the server through scripts/faultproxy.py, which
#                     puts it as far away as a cloud store is from a GPU node (FAR_LATENCY_MS=30
#                     before each response, FAR_CONNECTION_MBPS=25 per connection, as in
#                     Benchmarks/far-store.sh); sections cold and ttft; results to
#                     Benchmarks/peers/far/ and Benchmarks/results/peers-far-<UTC>.md
#   WC_CONCURRENCY=8  weightcache's transfer.concurrency (8: the peers' setting; its default is 32)
#   CURL_PARALLEL="8 16"   the curl ceiling's widths (FAR: "8 32")
#   SETTLE_SECONDS=180     how long each cold run may wait for a 512 MiB write probe under 1 s
#                     (the VM's slow phases, see bench.py; SMOKE: 0, no wait)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here=$repo/Benchmarks/peers
cd "$repo"
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"

smoke=${SMOKE:-0}
far_mode=${FAR:-0}
if [ "$smoke" = 1 ]; then
  runs=${RUNS:-1}
  peers=${PEERS:-weightcache-pull weightcache-preload aws boto3 rclone curl}
  results=${RESULTS_DIR:-${TMPDIR:-/tmp}/weightcache-peers-smoke}
  model_mib=${MODEL_MIB:-25}
  shards=3
else
  runs=${RUNS:-3}
  peers=${PEERS:-weightcache-pull weightcache-pull-buffered weightcache-preload aws boto3 rclone runai curl}
  results=${RESULTS_DIR:-$here}
  model_mib=${MODEL_MIB:-}
  shards=4
fi
sections=${SECTIONS:-cold warm ttft}
curl_parallel=${CURL_PARALLEL:-8 16}
if [ "$far_mode" = 1 ]; then
  # Far away, loading local files is the same as near: only cold and ttft change.
  sections=${SECTIONS:-cold ttft}
  curl_parallel=${CURL_PARALLEL:-8 32}
  [ "$smoke" = 1 ] || results=${RESULTS_DIR:-$here/far}
fi
wc_concurrency=${WC_CONCURRENCY:-8}
far_latency=${FAR_LATENCY_MS:-30} far_mbps=${FAR_CONNECTION_MBPS:-25}
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "$1 must be a positive integer, got '$2'" >&2; exit 2; }; }
positive WC_CONCURRENCY "$wc_concurrency"
positive FAR_CONNECTION_MBPS "$far_mbps"
[[ $far_latency =~ ^[0-9]+$ ]] || { echo "FAR_LATENCY_MS must be a whole number, got '$far_latency'" >&2; exit 2; }
for n in $curl_parallel; do positive "each of CURL_PARALLEL" "$n"; done
positive RUNS "$runs"
for p in $peers; do
  case $p in weightcache-pull | weightcache-pull-buffered | weightcache-preload | aws | boto3 | rclone | runai | curl) ;;
    *) echo "unknown peer '$p' in PEERS" >&2; exit 2 ;;
  esac
done
has() { [[ " $peers " == *" $1 "* ]]; }
t0=$(date +%s)

# The binary ---------------------------------------------------------------
if [ -n "${WEIGHTCACHE_BIN:-}" ]; then
  bin=$(readlink -f "$WEIGHTCACHE_BIN")
  [ -x "$bin" ] || { echo "WEIGHTCACHE_BIN=$WEIGHTCACHE_BIN is not an executable" >&2; exit 2; }
  log "using $bin"
else
  build_release
fi

# The peers: rclone from Debian, the Python ones in their own venv -----------
if has rclone && ! command -v rclone >/dev/null 2>&1; then
  log "rclone not found; installing the Debian package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rclone >&2; }
fi
command -v curl >/dev/null 2>&1 || { echo "curl is needed" >&2; exit 1; }
# GNU time measures each tool's peak RSS (bench.py, timed: why not wait4 alone).
if [ ! -x /usr/bin/time ]; then
  log "/usr/bin/time not found; installing the Debian package time"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >&2; }
  [ -x /usr/bin/time ] || { echo "GNU time (/usr/bin/time, Debian package time) is needed and could not be installed" >&2; exit 1; }
fi
venv=${PEERS_VENV:-$here/.venv}
[ -x "$venv/bin/python" ] || { log "creating the venv $venv"; python3 -m venv "$venv"; }
py=$venv/bin/python
# What the report needs, plus the Python peers that PEERS names: a machine without
# a package index (a GPU node, say) runs PEERS="weightcache-pull rclone curl" with
# PEERS_VENV pointing at a Python that already has numpy, safetensors and matplotlib.
light='matplotlib, numpy, safetensors'
if has aws || has boto3; then light="boto3, s3transfer, awscli, $light"; fi
if ! "$py" -c "import $light" 2>/dev/null; then
  log "installing the light peers into $venv (requirements.txt)"
  "$py" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
if has runai && ! "$py" -c 'import runai_model_streamer, runai_model_streamer_s3' 2>/dev/null; then
  log "installing the Run:ai model streamer (and torch) into $venv (requirements-runai.txt)"
  "$py" -m pip install -q --disable-pip-version-check -r "$here/requirements-runai.txt" >&2
fi
export PATH=$venv/bin:$PATH  # aws is the venv's awscli

# The cache policy: drop the page cache before cold runs where we may --------
drop=1
if [ "$far_mode" = 1 ]; then
  # Far away the network is the limit, not the client's cache. And this VM
  # hands free memory back to its host: after a drop, a far pull of 500 MiB
  # spent 14-19 s of system time copying into fresh page-cache pages, against
  # 0.65 s without. That slow phase also came and went on its own, so it is the
  # VM's, not the drop's alone (docs/performance.md, section 6), but a drop
  # before every run invites it.
  drop=0
  log "FAR: no drop_caches; each tool writes into the memory its predecessor's output just freed"
elif ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  drop=0
  log "cannot write /proc/sys/vm/drop_caches (not root?): cold runs will only sync"
fi

# Room on disk: the run keeps up to six copies of the model at once (the
# source, the server's data, a tool's output, three staging directories), and
# every pull leaves staging.minFreeBytes free (10 GiB unless set). Without the
# room, pulls fail with no-space halfway through: say so before starting.
min_free=${WEIGHTCACHE_STAGING_MIN_FREE_BYTES:-10GiB}
min_free=${min_free%B}
min_free=$(numfmt --from=iec "${min_free%i}" 2>/dev/null || echo $((10 << 30)))
need=$(( (${model_mib:-2200} * 6 + 1024) * 1048576 + min_free ))
tmp_root=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
mkdir -p "$tmp_root"  # a BENCH_TMPDIR that does not exist yet is made, not a df error
have=$(( $(df -Pk "$tmp_root" | awk 'NR == 2 {print $4}') * 1024 ))
if [ "$smoke" != 1 ] && [ "$have" -lt "$need" ]; then
  log "not enough room in $tmp_root: $((have >> 20)) MiB free, the run needs about $((need >> 20)) MiB" \
    "(6 copies of the model plus staging.minFreeBytes); set BENCH_TMPDIR, or WEIGHTCACHE_STAGING_MIN_FREE_BYTES=0 on a scratch machine"
  exit 1
fi

# The server and the model ---------------------------------------------------
start_server  # $work, AWS_* exported; stopped and removed on exit
export AWS_DEFAULT_REGION=$AWS_REGION
model=$work/model
log "generating the model"
if [ -n "$model_mib" ]; then
  python3 "$here/make-model.py" "$model" --shards "$shards" --total-mib "$model_mib" >&2
else
  python3 "$here/make-model.py" "$model" --shards "$shards" >&2
fi
name=peers/tinyllama-1.1b-shapes rev=main
(cd "$work" && WEIGHTCACHE_MODELS=s3://peers/root "$bin" push --create-bucket "$model" "$name@$rev" >&2)

far_desc=
if [ "$far_mode" = 1 ]; then
  start_far_proxy "$far_latency" "$far_mbps"  # pushed straight, read far away
  export AWS_ENDPOINT_URL=$far
  far_desc="every tool through scripts/faultproxy.py --latency-ms $far_latency --connection-rate $((far_mbps * 1000000)) (each response head held ${far_latency} ms, each connection paced to ${far_mbps} MB/s) in front of the server on 127.0.0.1"
fi

# bench.py measures; run it from $work so no ./config.json is picked up: the
# built-in defaults (8 MiB parts, 8 in parallel) plus this environment.
cd "$work"
PEERS_REPO=$repo PEERS_WORK=$work PEERS_BIN=$bin PEERS_MODEL=$name@$rev PEERS_MODEL_DIR=$model \
  PEERS_BUCKET=peers PEERS_MODELS_PREFIX=root PEERS_PREFIX=root/$name/$rev PEERS_SERVER_DATA=$work/s3/data \
  PEERS="$peers" RUNS=$runs SMOKE=$smoke SECTIONS="$sections" PEERS_FAR="$far_desc" \
  PEERS_WC_CONCURRENCY=$wc_concurrency PEERS_CURL_PARALLEL="$curl_parallel" PEERS_RESULTS_DIR=$results PEERS_DROP_CACHES=$drop \
  PEERS_MAKE_MODEL="make-model.py --shards $shards${model_mib:+ --total-mib $model_mib}" \
  "$py" "$here/bench.py"
cd "$repo"

if [ "$smoke" != 1 ]; then
  mkdir -p "$repo/Benchmarks/results"
  copy=$repo/Benchmarks/results/peers$([ "$far_mode" = 1 ] && echo -far)-$(date -u +%Y%m%dT%H%M%SZ).md
  cp "$results/results.md" "$copy"
  log "table copied to ${copy#"$repo"/}"
fi
log "done in $(($(date +%s) - t0)) s"
