#!/usr/bin/env python3
"""Turns the JSON lines of bench/run.sh into one Markdown table with the ratios raftdb/etcd and
raftdb/limit. Usage: bench/report.py RESULTS.jsonl [DURATION WARMUP]"""

import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
duration = sys.argv[2] if len(sys.argv) > 2 else "?"
warmup = sys.argv[3] if len(sys.argv) > 3 else "?"
by = {(r["system"], r["name"]): r for r in rows}


def get(system, name):
    return by.get((system, name))


def ops(r):
    return r["ops_per_sec"] if r else None


def p50(r):
    return r["latency_us"]["p50"] if r else None


def num(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def lat(r):
    if not r:
        return "—"
    l = r["latency_us"]
    return " / ".join(num(l[k]) for k in ("p50", "p90", "p99", "p99_9", "max"))


def errors(r):
    if not r:
        return "—"
    if not r["errors"]:
        return "0"
    return " ".join(f"{k}={v}" for k, v in sorted(r["errors"].items()))


def gen(r):
    if not r:
        return "—"
    g = r["generator"]
    return f"{g['cpu_us_per_op']:.1f} µs, {g['cpu_percent_of_core']:.0f}%"


def server(r):
    if not r or "server" not in r:
        return "—"
    s = r["server"]
    return f"{s['cpu_us_per_op']:.0f} µs, {s['cpu_percent_of_core']:.0f}%"


fsync_overwrite = get("limit", "fsync-overwrite")
fsync_append = get("limit", "fsync-append")
# The limit is the faster of the two raw loops, as in the Storage (WAL) section: both WALs preallocate
# their segments, so their syncs are overwrites; on a busy machine the appending loop is sometimes
# faster, and a limit must not be set below what was achieved.
fsync = max((r for r in (fsync_overwrite, fsync_append) if r), key=ops, default=None)
echo1 = get("limit", "echo-c1")
echo16 = get("limit", "echo-c16")
noop16 = get("raftdb", "noop-c16")

print(f"Each shape: {warmup} s warm-up, then {duration} s measured; closed loop, one keep-alive HTTP/1.1")
print("connection per client; 16-byte keys, 256-byte values, 10,000 keys (written once before the get")
print("runs). raftdb and etcd ran side by side (both clusters up, shapes alternating). etcd is driven")
print("through its **gRPC-gateway JSON endpoints** (`/v3/kv/put`, `/v3/kv/range`), not native gRPC.")
print()
loads = [r["load1"] for r in rows if "load1" in r]
if loads:
    print(f"1-minute load average sampled after each shape: {min(loads):.2f} to {max(loads):.2f} (this run's own")
    print("servers and generator account for about 2-3 of it).")
    noisy = sorted({r["others"].strip() for r in rows if r.get("others", "").strip()})
    if noisy:
        print("Busiest other processes seen after the shapes: " + "; ".join(noisy[:6]) + ".")
    print()
print("**Physical limits.**")
print()
print("| limit | ops/s | p50 µs | p99 µs | how |")
print("|---|---:|---:|---:|---|")
for label, r, how in (("fdatasync, 256 B pwrite into a written file (overwrite)", fsync_overwrite,
                       "`raft-storage-bench` raw loop on the data directory's file system"),
                      ("fdatasync, 256 B appended (file grows)", fsync_append, "same")):
    if r:
        mark = " (the limit used below)" if r is fsync else ""
        print(f"| {label}{mark} | {num(ops(r))} | {num(p50(r), 1)} | {num(r['latency_us']['p99'], 1)} | {how} |")
for name, r, how in (("loopback TCP round trip, 256 B, 1 client", echo1, "`raftctl bench --op echo` (NIO echo in-process)"),
                     ("loopback TCP round trips, 256 B, 16 clients", echo16, "same, 16 connections")):
    if r:
        print(f"| {name} | {num(ops(r))} | {num(p50(r))} | {num(r['latency_us']['p99'])} | {how} |")
print()

# The reference each shape is held against, and how it is computed.
limits = {}
if echo1:
    limits["noop-c1"] = (ops(echo1), "TCP echo, 1 client")
if echo16:
    limits["noop-c16"] = (ops(echo16), "TCP echo, 16 clients")
if fsync and echo1:
    floor = p50(fsync) + 2 * p50(echo1)
    limits["put-c1"] = (1e6 / floor, f"1 / (fsync p50 + 2 RTT p50) = 1 / {floor:.0f} µs")
if fsync:
    limits["put-c16"] = (ops(fsync), "one fdatasync per op (>1× = group commit)")
    limits["put-c64"] = (ops(fsync), "one fdatasync per op (>1× = group commit)")
if noop16:
    for name in ("get-default-c16", "get-consistent-c16", "get-stale-c16", "get-stale-leader-c16"):
        limits[name] = (ops(noop16), "raftdb's own HTTP floor (noop, 16 clients)")

targets = {
    "put-c1": ("p50 ≤ 600 µs", lambda r: p50(r) <= 600),
    "put-c64": ("≥ 15,000/s", lambda r: ops(r) >= 15000),
    "get-consistent-c16": ("≥ 15,000/s", lambda r: ops(r) >= 15000),
    "get-stale-c16": ("≥ 30,000/s", lambda r: ops(r) >= 30000),
    "get-stale-leader-c16": ("≥ 30,000/s", lambda r: ops(r) >= 30000),
}

shapes = [
    ("noop-c1", "noop (raftdb GET /livez, etcd GET /version), 1 client"),
    ("noop-c16", "noop, 16 clients"),
    ("put-c1", "put, 1 client"),
    ("put-c16", "put, 16 clients"),
    ("put-c64", "put, 64 clients"),
    ("get-default-c16", "get default (raftdb lease read; etcd linearizable), 16 clients"),
    ("get-consistent-c16", "get consistent (ReadIndex; etcd linearizable), 16 clients"),
    ("get-stale-c16", "get stale (etcd serializable), 16 clients spread over the 3 members"),
    ("get-stale-leader-c16", "get stale (etcd serializable), 16 clients on the leader only"),
]

print("**raftdb vs etcd.** Latency columns: p50 / p90 / p99 / p99.9 / max in µs. CPU columns: CPU per")
print("operation and share of one core over the measured window — the load generator's own (getrusage)")
print("and the three server processes' together (/proc).")
print()
print("| shape | raftdb ops/s | etcd ops/s | raftdb/etcd | raftdb latency µs | etcd latency µs | limit ops/s | raftdb/limit | target | errors raftdb; etcd | generator CPU raftdb; etcd | servers CPU raftdb; etcd |")
print("|---|---:|---:|---:|---|---|---:|---:|---|---|---|---|")
for name, label in shapes:
    r = get("raftdb", name)
    e = get("etcd", name)
    if not r and not e:
        continue
    limit, how = limits.get(name, (None, ""))
    target = ""
    if name in targets and r:
        text, check = targets[name]
        target = f"{text}: {'met' if check(r) else '**not met**'}"
    print(f"| {label} | {num(ops(r))} | {num(ops(e))} | {ratio(ops(r), ops(e))} | {lat(r)} | {lat(e)} | "
          f"{num(limit)} ({how}) | {ratio(ops(r), limit)} | {target} | {errors(r)}; {errors(e)} | "
          f"{gen(r)}; {gen(e)} | {server(r)}; {server(e)} |")
r, e = get("raftdb", "put-c1"), get("etcd", "put-c1")
if r and fsync and echo1:
    floor = p50(fsync) + 2 * p50(echo1)
    print()
    print(f"1-client put p50: raftdb {num(p50(r))} µs, etcd {num(p50(e))} µs, floor {floor:.0f} µs "
          f"(fdatasync p50 {p50(fsync):.0f} + 2 × loopback RTT p50 {p50(echo1):.0f}): raftdb at "
          f"{p50(r) / floor:.1f}× the floor" + (f", etcd at {p50(e) / floor:.1f}×." if e else "."))
