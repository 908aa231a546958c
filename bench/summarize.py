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


meshes = ["kite", "envoy"]
setups = ["direct", "onehop", "twohop"]
reps = max((len(v) for (m, s, k), v in samples.items() if k == "rps"), default=0)
print(f"Medians of {reps} interleaved repetitions.\n")

print("Throughput, closed loop (req/s)")
print(f"{'setup':<8} {'Kite':>10} {'Envoy':>10} {'Kite/Envoy':>11} {'Kite/direct':>12} {'Envoy/direct':>13}")
for s in setups:
    k, e = med("kite", s, "rps"), med("envoy", s, "rps")
    kd, ed = med("kite", "direct", "rps"), med("envoy", "direct", "rps")
    print(f"{s:<8} {fmt(k,0):>10} {fmt(e,0):>10} {ratio(k, e):>11} {ratio(k, kd):>12} {ratio(e, ed):>13}")

print("\nCPU per request per proxy (µs), closed loop")
print(f"{'setup':<8} {'Kite':>10} {'Envoy':>10} {'Kite/Envoy':>11}")
for s in ["onehop", "twohop"]:
    k, e = med("kite", s, "cpu_us_per_req_per_proxy"), med("envoy", s, "cpu_us_per_req_per_proxy")
    print(f"{s:<8} {fmt(k):>10} {fmt(e):>10} {ratio(k, e):>11}")

print("\nAdded latency at the fixed rate over the direct path (ms)")
print(f"{'setup':<8} {'pct':<6} {'Kite':>8} {'Envoy':>8} {'Kite/Envoy':>11}")
for s in ["onehop", "twohop"]:
    for p in ["p50", "p90", "p99", "p999"]:
        added = {}
        for m in meshes:
            v, d = med(m, s, f"{p}_ms"), med(m, "direct", f"{p}_ms")
            added[m] = None if v is None or d is None else v - d
        print(f"{s:<8} {p:<6} {fmt(added['kite'],3):>8} {fmt(added['envoy'],3):>8} {ratio(added['kite'], added['envoy']):>11}")

print("\nRSS per proxy (MiB)")
print(f"{'when':<16} {'Kite':>8} {'Envoy':>8} {'Kite/Envoy':>11}")
for label, s in [("idle", "idle"), ("after onehop", "onehop"), ("after twohop", "twohop"), ("1,000 conns", "many")]:
    k, e = med("kite", s, "rss_kib_per_proxy"), med("envoy", s, "rss_kib_per_proxy")
    k = None if k is None else k / 1024
    e = None if e is None else e / 1024
    print(f"{label:<16} {fmt(k):>8} {fmt(e):>8} {ratio(k, e):>11}")
