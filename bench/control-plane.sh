#!/usr/bin/env bash
# Kite's control plane at scale: the real `kite control` (release build) in
# a process of its own, loaded through its HTTP API with SERVICES Kubernetes
# Services and ENDPOINTS pods (WorkloadEntries, as `kite up` registers them)
# over NAMESPACES namespaces, and PROXIES simulated sidecars on real ADS gRPC
# streams (crates/kite-control/examples/scale/, a separate process). Once
# every sidecar has ACKed its initial config, CHANGES pods are added one at
# a time (and VS_CHANGES VirtualServices applied), each timed from the apply
# until every sidecar has received and ACKed it. CPU and RSS are the control
# plane's own, from /proc. Prints one table; the control plane's log goes to
# $WORK/control.log.
#
#   bench/control-plane.sh                      # 10,000 services, 1,000 proxies
#   SERVICES=1000 ENDPOINTS=5000 PROXIES=100 bench/control-plane.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SERVICES=${SERVICES:-10000}
ENDPOINTS=${ENDPOINTS:-50000}
NAMESPACES=${NAMESPACES:-20}
PROXIES=${PROXIES:-1000}
CHANGES=${CHANGES:-5}
VS_CHANGES=${VS_CHANGES:-3}
# Sidecars syncing at once while the fleet connects.
CONNECT_PARALLELISM=${CONNECT_PARALLELISM:-100}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-900}
CHANGE_TIMEOUT=${CHANGE_TIMEOUT:-120}
XDS_ADDR=${XDS_ADDR:-127.0.0.1:25010}
API_ADDR=${API_ADDR:-127.0.0.1:25014}
CA_ADDR=${CA_ADDR:-127.0.0.1:25012}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${WORK:-$TARGET/bench/control-plane}
# Another control-plane binary to compare (say, one built from an older
# commit); BUILD=0 skips building.
KITE=${KITE:-$TARGET/release/kite}
BUILD=${BUILD:-1}

if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet -p kite --bin kite
  cargo build --release --quiet -p kite-control --example scale
fi

rm -rf "$WORK"
mkdir -p "$WORK"
# One process per side; file descriptors for a thousand streams and more.
ulimit -n 65536 2> /dev/null || true

"$KITE" control --xds "$XDS_ADDR" --api "$API_ADDR" \
  --ca "$CA_ADDR" --ca-dir "$WORK/ca" > "$WORK/control.log" 2>&1 &
CP=$!
trap 'kill "$CP" 2> /dev/null; wait "$CP" 2> /dev/null || true' EXIT
for _ in $(seq 100); do
  if curl -fsS "http://$API_ADDR/ready" > /dev/null 2>&1; then break; fi
  if ! kill -0 "$CP" 2> /dev/null; then
    echo "kite control exited; see $WORK/control.log" >&2
    tail -20 "$WORK/control.log" >&2
    exit 1
  fi
  sleep 0.1
done

echo "machine: $(nproc) CPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB; $(git rev-parse --short HEAD 2> /dev/null || echo '?')" >&2
"$TARGET/release/examples/scale" \
  --api "$API_ADDR" --xds "$XDS_ADDR" --pid "$CP" --clk-tck "$(getconf CLK_TCK)" \
  --services "$SERVICES" --endpoints "$ENDPOINTS" --namespaces "$NAMESPACES" \
  --proxies "$PROXIES" --changes "$CHANGES" --vs-changes "$VS_CHANGES" \
  --connect-parallelism "$CONNECT_PARALLELISM" --sync-timeout "$SYNC_TIMEOUT" --change-timeout "$CHANGE_TIMEOUT" \
  "$@"
