#!/usr/bin/env python3
"""Medians and ratios of bench/run.sh's samples (results.tsv)."""
import statistics
import sys
from collections import defaultdict

samples = defaultdict(list)
with open(sys.argv[1]) as f:
    next(f)
    for line in f:
        mesh, setup, _rep, metric, value = line.rstrip("\n").split("\t")
        if value:
            samples[(mesh, setup, metric)].append(float(value))


def med(mesh, setup, metric):
    v = samples.get((mesh, setup, metric))
    return statistics.median(v) if v else None


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def present(setup):
    return any((m, setup, "rps") in samples for m in meshes)


meshes = ["kite", "envoy"]
# (setup, label, the direct setup it compares with)
setups = [
    ("direct", "direct", "direct"),
    ("onehop", "onehop", "direct"),
    ("twohop", "twohop", "direct"),
    ("h2-direct", "h2 direct", "h2-direct"),
    ("h2-twohop", "h2 twohop", "h2-direct"),
    ("grpc-direct", "grpc direct", "grpc-direct"),
    ("grpc-twohop", "grpc twohop", "grpc-direct"),
    ("1k-direct", "1KiB direct", "1k-direct"),
    ("1k-twohop", "1KiB twohop", "1k-direct"),
    ("64k-direct", "64KiB direct", "64k-direct"),
    ("64k-twohop", "64KiB twohop", "64k-direct"),
    ("close-direct", "close direct", "close-direct"),
    ("close-twohop", "close twohop", "close-direct"),
    ("bookinfo", "bookinfo", None),
]
setups = [s for s in setups if present(s[0])]
reps = max((len(v) for (m, s, k), v in samples.items() if k == "rps"), default=0)
print(f"Medians of {reps} interleaved repetitions.\n")

print("Throughput, closed loop (req/s)")
print(f"{'setup':<14} {'Kite':>10} {'Envoy':>10} {'Kite/Envoy':>11} {'Kite/direct':>12} {'Envoy/direct':>13}")
for s, label, d in setups:
    k, e = med("kite", s, "rps"), med("envoy", s, "rps")
    kd = med("kite", d, "rps") if d else None
    ed = med("envoy", d, "rps") if d else None
    print(f"{label:<14} {fmt(k,0):>10} {fmt(e,0):>10} {ratio(k, e):>11} {ratio(k, kd):>12} {ratio(e, ed):>13}")
notes = {
    "h2": "h2, grpc: h2load over h2c to the client sidecar, HTTP/2 between the sidecars.",
    "grpc": "h2, grpc: h2load over h2c to the client sidecar, HTTP/2 between the sidecars.",
    "1k": "1KiB, 64KiB: POST bodies, echoed back.",
    "64k": "1KiB, 64KiB: POST bodies, echoed back.",
    "close": "close: a new connection per request (twohop: and a new mTLS connection\n"
             "  between the sidecars), so req/s = handshakes/s.",
    "bookinfo": "bookinfo: pages/s through the ingress gateway.",
}
for note in dict.fromkeys(notes[s.split("-")[0]] for s, _, _ in setups if s.split("-")[0] in notes):
    print(note)

failed = [(m, label) for s, label, _ in setups for m in meshes if (m, s, "check_failed") in samples]
if failed:
    print("\nCHECK FAILED (a wrong answer before the measurement; raw/<mesh>-<setup>-check.txt):")
    for m, label in failed:
        print(f"  {m:<6} {label}")

errors = [(m, label, med(m, s, "errors")) for s, label, _ in setups for m in meshes]
errors = [(m, label, n) for m, label, n in errors if n]
if errors:
    print("\nERRORS (median per run; non-2xx responses or socket errors):")
    for m, label, n in errors:
        print(f"  {m:<6} {label:<14} {n:,.0f}")

print("\nCPU per request (µs), closed loop")
print(f"{'setup':<14} {'proxies':>7} {'Kite':>10} {'Envoy':>10} {'Kite/Envoy':>11}   per proxy; for bookinfo: all proxies per page")
for s, label, _ in setups:
    n = med("kite", s, "proxies") or med("envoy", s, "proxies")
    if n is None:
        continue
    metric = "cpu_us_per_req_all_proxies" if s == "bookinfo" else "cpu_us_per_req_per_proxy"
    k, e = med("kite", s, metric), med("envoy", s, metric)
    print(f"{label:<14} {fmt(n,0):>7} {fmt(k):>10} {fmt(e):>10} {ratio(k, e):>11}")

conn_rows = [(s, label) for s, label, _ in setups
             if any((m, s, "upstream_conns_per_req") in samples for m in meshes)]
if conn_rows:
    print("\nNew connections from the client sidecar to the server sidecar per request")
    print(f"{'setup':<14} {'Kite':>10} {'Envoy':>10}")
    for s, label in conn_rows:
        k, e = med("kite", s, "upstream_conns_per_req"), med("envoy", s, "upstream_conns_per_req")
        print(f"{label:<14} {fmt(k,3):>10} {fmt(e,3):>10}")
    print("close twohop should be 1.000 (a handshake per request), the others about 0.")

def med_pooled(setup, metric):
    v = [x for m in meshes for x in samples.get((m, setup, metric), [])]
    return statistics.median(v) if v else None


lat_setups = [s for s in ["onehop", "twohop"] if (meshes[0], s, "p50_ms") in samples]
if lat_setups and (meshes[0], "direct", "p50_ms") in samples:
    print("\nLatency at the fixed rate (ms)")
    print(f"{'setup':<8} {'pct':<6} {'Kite':>8} {'Envoy':>8} {'Kite/Envoy':>11}")
    for s in ["direct"] + lat_setups:
        for p in ["p50", "p90", "p99", "p999"]:
            k, e = med("kite", s, f"{p}_ms"), med("envoy", s, f"{p}_ms")
            print(f"{s:<8} {p:<6} {fmt(k,3):>8} {fmt(e,3):>8} {ratio(k, e):>11}")
    # The direct path is the same for both meshes (the load tool to an
    # echo, no proxy), so one baseline from both meshes' samples: each
    # mesh's own direct runs differ by the machine's noise alone, and that
    # difference went straight into the ratio.
    print("\nAdded latency at the fixed rate over the direct path (ms; the direct path's samples of both meshes pooled)")
    print(f"{'setup':<8} {'pct':<6} {'Kite':>8} {'Envoy':>8} {'Kite/Envoy':>11}")
    for s in lat_setups:
        for p in ["p50", "p90", "p99", "p999"]:
            d = med_pooled("direct", f"{p}_ms")
            added = {}
            for m in meshes:
                v = med(m, s, f"{p}_ms")
                added[m] = None if v is None or d is None else v - d
            print(f"{s:<8} {p:<6} {fmt(added['kite'],3):>8} {fmt(added['envoy'],3):>8} {ratio(added['kite'], added['envoy']):>11}")
    print("\nCPU per request at the fixed rate (µs per proxy), and the machine's steal time during those runs")
    print(f"{'setup':<8} {'Kite':>8} {'Envoy':>8} {'Kite/Envoy':>11} {'steal % Kite':>13} {'Envoy':>6}")
    for s in ["direct"] + lat_setups:
        k, e = (med(m, s, "rate_cpu_us_per_req_per_proxy") for m in meshes)
        sk, se = (med(m, s, "steal_pct") for m in meshes)
        print(f"{s:<8} {fmt(k):>8} {fmt(e):>8} {ratio(k, e):>11} {fmt(sk):>13} {fmt(se):>6}")

print("\nMemory per proxy (MiB): RSS, and private anonymous memory (heap)")
print(f"{'when':<18} {'RSS Kite':>9} {'Envoy':>8} {'Kite/Envoy':>11} {'Anon Kite':>10} {'Envoy':>8} {'Kite/Envoy':>11}")
memory_rows = [("idle", "idle")] + [(f"after {label}", s) for s, label, _ in setups if s != "direct" and not s.endswith("-direct")]
memory_rows.append(("1,000 conns", "many"))
memory_rows.append(("1,000 conns, h2", "many-h2"))
for label, s in memory_rows:
    cells = []
    for metric in ["rss_kib_per_proxy", "anon_kib_per_proxy"]:
        k, e = med("kite", s, metric), med("envoy", s, metric)
        k = None if k is None else k / 1024
        e = None if e is None else e / 1024
        cells.append((k, e))
    if all(k is None and e is None for k, e in cells):
        continue
    (rk, re), (ak, ae) = cells
    print(f"{label:<18} {fmt(rk):>9} {fmt(re):>8} {ratio(rk, re):>11} {fmt(ak):>10} {fmt(ae):>8} {ratio(ak, ae):>11}")
for label, s in memory_rows[-2:]:
    k, e = med("kite", s, "upstream_conns_opened"), med("envoy", s, "upstream_conns_opened")
    if k is not None or e is not None:
        print(f"{label}: connections opened between the sidecars: Kite {fmt(k, 0)}, Envoy {fmt(e, 0)}; "
              f"requests (errors): Kite {fmt(med('kite', s, 'requests'), 0)} ({fmt(med('kite', s, 'errors'), 0)}), "
              f"Envoy {fmt(med('envoy', s, 'requests'), 0)} ({fmt(med('envoy', s, 'errors'), 0)})")
    sides = {m: [med(m, s, f"rss_kib_{side}") for side in ("client", "server")] for m in meshes}
    if any(v is not None for vs in sides.values() for v in vs):
        print(f"{label}: RSS of the client sidecar / the server sidecar (MiB): " + ", ".join(
            f"{'Kite' if m == 'kite' else 'Envoy'} {fmt(None if c is None else c / 1024)} / {fmt(None if v is None else v / 1024)}"
            for m, (c, v) in sides.items()))
print("1,000 conns: wrk's connections through two sidecars with mTLS, HTTP/1.1 "
      "between them; h2: HTTP/2 between them (h2UpgradePolicy: UPGRADE), "
      "through sidecars that carried no other run.")
print("after a setup: the proxies it went through (client sidecar, and the "
      "server sidecar for twohop; bookinfo: gateway and sidecars, averaged).")
