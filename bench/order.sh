#!/usr/bin/env bash
# Writes crates/kite/kite-proxy.order, the order the release build's linker
# lays out the sidecar's functions in (crates/kite/build.rs): the ones that
# ran in a short pass of bench/run.sh's scenarios, under callgrind, most
# instructions first. Run it again after changing the proxy's code, the
# toolchain or the dependencies' versions: each renames functions (LLVM
# numbers the local copies of small functions anew with any change), and
# a name the file gives that no longer exists is skipped when linking.
# Takes about 1 1/2 minutes on 2 cores, once the release build is there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-$ROOT/target/order}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

command -v valgrind > /dev/null || apt-get install -y -q valgrind > /dev/null
# KITE=<path> profiles that build as it is (kite-proxy beside it).
if [ -z "${KITE:-}" ]; then
  cargo build --release -p kite --bin kite --bin kite-proxy --quiet
  KITE=$TARGET_DIR/release/kite
fi
rm -rf "$WORK"
mkdir -p "$WORK/bin/real" "$WORK/profiles"
cp "$KITE" "$WORK/bin/kite"
cp "$(dirname "$KITE")/kite-proxy" "$WORK/bin/real/kite-proxy"
# `kite up` starts the kite-proxy beside it; the bench finds a sidecar by
# its command line (`kite-proxy --ip ...`).
cat > "$WORK/bin/kite-proxy" << WRAPPER
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$WORK/profiles/callgrind.%p \
  --demangle=no --compress-strings=no --dump-line=no "$WORK/bin/real/kite-proxy" "\$@" 2>> $WORK/valgrind.log
WRAPPER
chmod +x "$WORK/bin/kite-proxy"
# Every scenario once, briefly; the sidecars are ten times slower under
# callgrind, and a function that ran once is as much in the file as a hot one.
KITE=$WORK/bin/kite MESHES=kite SCENARIOS="base h2 grpc body close bookinfo" REPS=1 DURATION=2 \
  RATE=200 RATE_SECS=2 MANY=100 WORK=$WORK/bench bench/run.sh > "$WORK/bench.log" 2>&1 ||
  { tail -20 "$WORK/bench.log" >&2; exit 1; }
python3 bench/order.py "$WORK/bin/real/kite-proxy" crates/kite/kite-proxy.order "$WORK"/profiles/callgrind.*
