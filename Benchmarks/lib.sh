# Shared by the benchmark scripts: build, server, timing, the table.
# Callers set: repo, runs, size_mib, wc_args; they get: bin, work, log, timed,
# random_file, push_model, stop_on_exit, start_far_proxy, run_interleaved (fills secs[tool] and
# rss[tool]), print_table.

# The binary as it is shipped (deploy/README.md, the Dockerfile): release, with
# the Swift runtime and Foundation linked in. After a page-cache drop (as
# before every cold run) `weightcache --help` took 0.16-0.21 s dynamically
# linked, loading 50-odd shared libraries from disk, and 0.10-0.12 s static
# (0.02 s either way when cached): the benchmarks measure what ships.
bin=$repo/.build-static/release/weightcache
log() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }

build_release() {
  log "building release binary (swift build -c release --static-swift-stdlib --scratch-path .build-static)"
  swift build -c release --static-swift-stdlib --scratch-path "$repo/.build-static" --product weightcache >&2
}

# PIDs that stop_on_exit asked to be killed when the script exits, before the server stops.
exit_pids=()
stop_on_exit() { exit_pids+=("$1"); }

# Starts a SeaweedFS of our own in a temp dir; stops it (and exit_pids) and
# removes the dir on exit.
start_server() {
  work=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/weightcache-bench.XXXXXX")
  trap 'for p in "${exit_pids[@]}"; do kill "$p" 2>/dev/null || true; done
        bash "$repo/scripts/s3-server.sh" stop "$work/s3" >&2 || true; rm -rf "$work"' EXIT
  trap 'exit 130' INT TERM
  local server_env
  server_env=$(bash "$repo/scripts/s3-server.sh" start "$work/s3")
  eval "$server_env"
  export AWS_ENDPOINT_URL=$WEIGHTCACHE_TEST_S3_ENDPOINT AWS_REGION=$WEIGHTCACHE_TEST_S3_REGION
  export AWS_ACCESS_KEY_ID=$WEIGHTCACHE_TEST_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$WEIGHTCACHE_TEST_S3_SECRET_KEY
}

# start_far_proxy LATENCY_MS CONNECTION_MBPS: scripts/faultproxy.py in front of
# the server, holding each response head LATENCY_MS and pacing each connection's
# bodies to CONNECTION_MBPS MB/s, as a cloud store is far from a GPU node; sets
# far (its URL) and near (the server's), and stops the proxy on exit.
start_far_proxy() {
  near=$WEIGHTCACHE_TEST_S3_ENDPOINT
  python3 "$repo/scripts/faultproxy.py" --listen 127.0.0.1:0 --upstream "${near#http://}" \
    --latency-ms "$1" --connection-rate "$(($2 * 1000000))" >"$work/proxy.out" 2>"$work/proxy.err" &
  stop_on_exit $!
  for _ in $(seq 100); do grep -q listening "$work/proxy.out" 2>/dev/null && break; sleep 0.1; done
  far=http://$(awk '/listening/ { print $NF }' "$work/proxy.out")
  [ "$far" != http:// ] || { cat "$work/proxy.err" >&2; exit 1; }
  log "far store: $far ($1 ms to first byte, $2 MB/s per connection) in front of $near"
}

# push_model BUCKET NAME@REV SIZE_MIB [config] [sha256]: a model of one random
# weights.bin of SIZE_MIB (plus a small config.json with "config"), pushed as
# NAME@REV under s3://BUCKET/root, which becomes WEIGHTCACHE_MODELS; the local
# copy is removed. With "sha256", model_sha256 is weights.bin's SHA-256.
push_model() {
  local bucket=$1 model=$2 mib=$3 extra=" ${*:4} "
  log "generating a $mib MiB model file and pushing it"
  mkdir -p "$work/model"
  random_file "$work/model/weights.bin" "$mib"
  [[ $extra != *" config "* ]] || echo '{"architectures": ["Bench"]}' >"$work/model/config.json"
  [[ $extra != *" sha256 "* ]] || model_sha256=$(sha256sum "$work/model/weights.bin" | cut -d' ' -f1)
  export WEIGHTCACHE_MODELS=s3://$bucket/root
  "$bin" push --create-bucket "$work/model" "$model" >&2
  rm -rf "$work/model"
}

# Incompressible bytes, fast: AES-CTR of zeros.
random_file() {
  openssl enc -aes-128-ctr -nosalt -K "$(openssl rand -hex 16)" -iv "$(openssl rand -hex 16)" \
    </dev/zero 2>/dev/null | head -c "$(($2 << 20))" >"$1" || true
}

# Runs "$@" and prints "SECONDS MAXRSS_KIB CPU_SECONDS": wall time from fork to
# exit, the child's peak RSS and its user+system CPU time (wait4). Python starts
# before the clock does.
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
print(f"{t1 - t0:.6f} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime:.3f}")
sys.exit(os.waitstatus_to_exitcode(status))
PY
}

# write_probe: seconds to write 512 MiB of zeros into a new file in the page
# cache (no fsync), removed after. Normally about 0.2 s here; it takes
# several seconds when the memory it lands in has been taken back by this
# VM's host (a first touch then costs about 7 s per GiB), which slows every
# tool that writes. It does not see every slow minute: tools can be slow
# after a fast probe (docs/performance.md, "What limits each figure on this
# VM"; results/vm-memory-20261203.txt). Keep it in step with write_probe in
# peers/bench.py. Taken before each round and printed with the table.
write_probe() {
  local t0 t1
  t0=$(date +%s.%N)
  dd if=/dev/zero of="$work/probe" bs=1M count=512 status=none
  t1=$(date +%s.%N)
  rm -f "$work/probe"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

# settled_probe: write probes until one takes under 1 s (5 s apart, for at
# most SETTLE_SECONDS, default 180); prints the last probe's seconds, with a
# "!" when the machine did not settle in time. Each round starts on a
# settled machine: what is measured is the tools, not the VM's phase.
settled_probe() {
  local deadline=$((SECONDS + ${SETTLE_SECONDS:-180})) probe
  while true; do
    probe=$(write_probe)
    awk -v p="$probe" 'BEGIN { exit !(p < 1.0) }' && { echo "$probe"; return; }
    ((SECONDS < deadline)) || { echo "$probe!"; return; }
    log "write probe ${probe} s for 512 MiB: the VM is in a slow phase; waiting"
    sleep 5
  done
}

# One untimed warm-up round, then $runs interleaved rounds of run_tool TOOL,
# each after a settled_probe (in $probes).
declare -A secs rss cpu
probes=""
run_interleaved() {
  local tool round seconds kib cpu_s probe
  for tool in "$@"; do
    run_tool "$tool" >"$work/$tool.log" 2>&1 || { cat "$work/$tool.log" >&2; exit 1; }
    secs[$tool]="" rss[$tool]=0 cpu[$tool]=""
  done
  for ((round = 1; round <= runs; round++)); do
    probe=$(settled_probe)
    probes+="$probe "
    log "round $round/$runs write probe ${probe} s for 512 MiB"
    for tool in "$@"; do
      run_tool "$tool" >"$work/$tool.log" 2>&1 || { echo "$tool failed:" >&2; cat "$work/$tool.log" >&2; exit 1; }
      read -r seconds kib cpu_s < <(tail -n 1 "$work/$tool.log")
      secs[$tool]+="$seconds "
      cpu[$tool]+="$cpu_s "
      [ $((kib / 1024)) -gt "${rss[$tool]}" ] && rss[$tool]=$((kib / 1024))
      log "round $round/$runs $(printf '%-6s' "$tool") ${seconds} s"
    done
  done
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# print_table NAME DESCRIPTION TOOL...: MiB/s per run, medians, ratio to the
# first tool, peak RSS; also written to Benchmarks/results/NAME-<UTC>.txt.
print_table() {
  local name=$1 what=$2
  shift 2
  mkdir -p "$repo/Benchmarks/results"
  local result
  result=$repo/Benchmarks/results/$name-$(date -u +%Y%m%dT%H%M%SZ).txt
  {
    echo "# $name  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  commit $(git -C "$repo" rev-parse --short HEAD)"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$what"
    echo "weightcache flags: ${wc_args:-(defaults)}; $runs runs per tool after a warm-up round, interleaved"
    [ -z "$probes" ] || echo "write probe before each round (s to write 512 MiB into the page cache, about 0.2 when the VM is settled; each round waited for one under 1, ! = it did not come within SETTLE_SECONDS): $probes"
    echo
    for tool in "$@"; do echo "$tool ${rss[$tool]} $(median ${cpu[$tool]}) ${secs[$tool]}"; done | python3 -c '
import statistics, sys
size = float(sys.argv[1])
rows = [(l.split()[0], l.split()[1], l.split()[2], [size / float(x) for x in l.split()[3:]]) for l in sys.stdin if l.strip()]
base = statistics.median(rows[0][3])
# The ratio within each round, then its median: a slow phase of the machine
# (minutes long here) hits both tools of a round alike, so pairing cancels it
# where a ratio of medians taken over different rounds does not.
paired = lambda xs: statistics.median(x / b for x, b in zip(xs, rows[0][3]))
head = (["tool"] + [f"run{i + 1}" for i in range(len(rows[0][3]))]
        + ["median", f"vs {rows[0][0]}", "paired", "CPU s", "peak RSS MiB"])
body = [[t] + [f"{x:.1f}" for x in xs] + [f"{statistics.median(xs):.1f}", f"{statistics.median(xs) / base:.2f}",
        f"{paired(xs):.2f}", c, r] for t, r, c, xs in rows]
widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
print(fmt(head)); print("  ".join("-" * w for w in widths))
for r in body: print(fmt(r))
print(f"(MiB/s of the whole command; vs {rows[0][0]} = median / first row median; paired = median over rounds of the ratio to the first row in the same round; CPU s = median user+system seconds of the client)")
' "$size_mib"
  } | tee "$result"
  log "written to ${result#"$repo"/}"
}
