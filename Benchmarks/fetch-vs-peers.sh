#!/usr/bin/env bash
# fetch-vs-peers: how fast `weightcache fetch` pulls one big object compared
# with the tools people would otherwise use (curl, one stream; aws s3 cp,
# awscli's own parallel ranged download), all against the same object on the
# same local SeaweedFS S3 server, in one run, so the numbers are comparable.
#
#   Benchmarks/fetch-vs-peers.sh
#
# Environment knobs:
#   RUNS=3         timed runs per tool (interleaved round-robin across tools,
#                  after one untimed warm-up round)
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
# shellcheck source=Benchmarks/lib.sh
. "$repo/Benchmarks/lib.sh"

runs=${RUNS:-3}
wc_args=${WC_ARGS:-}
size_mib=${SIZE_MIB:-2048}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer, got '$runs'" >&2; exit 2; }

build_release
if ! command -v aws >/dev/null 2>&1; then
  log "aws not found; installing awscli from PyPI"
  python3 -m pip install -q awscli >&2
  hash -r
fi
start_server
# awscli reads these too; AWS_DEFAULT_REGION outranks AWS_REGION in both.
export AWS_DEFAULT_REGION=$AWS_REGION
# No stray ~/.aws profile may change awscli's transfer defaults between machines.
export AWS_CONFIG_FILE=$work/no-aws-config AWS_SHARED_CREDENTIALS_FILE=$work/no-aws-credentials
unset AWS_PROFILE

log "generating $size_mib MiB of random bytes and uploading them"
random_file "$work/source.bin" "$size_mib"
src_hash=$("$bin" hash "$work/source.bin" | cut -d' ' -f1)
"$bin" put --create-bucket "$work/source.bin" s3://bench/blob.bin >&2
rm -f "$work/source.bin"  # two copies on disk at most: the server's and one download

out=$work/out.bin
run_tool() {
  rm -f "$out" "$out.partial"
  sync  # keep earlier writeback out of the timed window
  case $1 in
    weightcache)
      # shellcheck disable=SC2086  # WC_ARGS is meant to split into flags
      timed "$bin" fetch $wc_args s3://bench/blob.bin "$out" ;;
    curl)
      # curl 7.88 signs but does not send x-amz-content-sha256, which S3 requires.
      timed curl -sS --fail --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o "$out" "$AWS_ENDPOINT_URL/bench/blob.bin" ;;
    aws)
      # AWS_CA_BUNDLE is set machine-wide here and some tools choke on it.
      timed env -u AWS_CA_BUNDLE aws s3 cp --only-show-errors --endpoint-url "$AWS_ENDPOINT_URL" \
        s3://bench/blob.bin "$out" ;;
  esac
  local status=$?
  # Every tool must have written the whole object; weightcache's must match by xxh3.
  [ "$(stat -c %s "$out" 2>/dev/null)" = $((size_mib << 20)) ] || { echo "$1 wrote the wrong size" >&2; return 1; }
  if [ "$1" = weightcache ] && [ ! -f "$work/checked" ]; then
    [ "$("$bin" hash "$out" | cut -d' ' -f1)" = "$src_hash" ] || { echo "weightcache output differs" >&2; return 1; }
    touch "$work/checked"
  fi
  return $status
}

run_interleaved weightcache curl aws
print_table fetch-vs-peers \
  "object: $size_mib MiB random bytes on SeaweedFS $(weed version 2>/dev/null | head -n 1 | awk '{print $3}'), server warm; $(curl --version | head -n 1 | cut -d' ' -f1-2), $(env -u AWS_CA_BUNDLE aws --version 2>&1 | cut -d' ' -f1)" \
  weightcache curl aws
