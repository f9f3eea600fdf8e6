#!/usr/bin/env bash
# A/B comparison of two raftdb builds on this machine, in one run: for each round, a fresh local
# 3-node cluster per build (alternating A, B, A, B, ... so that drift of a shared machine hits both
# alike), then one `raftctl bench` per shape. Prints one line per build, round and shape.
#
#   bench/ab.sh OLD/raftdb NEW/raftdb            # 2 rounds, 6 s per shape after 1 s of warm-up
#   ROUNDS=3 DURATION=10 bench/ab.sh A B
#
# The commands behind BENCHMARKS.md's A/B tables. Ports: HTTP 18091-18093, Raft 19091-19093,
# loopback only; each cluster is stopped (by pid, through raftctl cluster stop) before the next.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=${1:?usage: bench/ab.sh RAFTDB_A RAFTDB_B}
B=${2:?usage: bench/ab.sh RAFTDB_A RAFTDB_B}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
RAFTCTL=${RAFTCTL:-$ROOT/.build/release/raftctl}
E=127.0.0.1:18091,127.0.0.1:18092,127.0.0.1:18093
shapes=(
  "put 1|--op put --clients 1"
  "put 64|--op put --clients 64"
  "get consistent 16|--op get --level consistent --clients 16"
  "get stale 16|--op get --level stale --clients 16"
)
for round in $(seq 1 "$ROUNDS"); do
  for build in "$A" "$B"; do
    dir=$(mktemp -d /tmp/raftdb-ab.XXXXXX)
    "$RAFTCTL" cluster start --nodes 3 --dir "$dir" --http-port 18091 --raft-port 19091 --raftdb "$build" >/dev/null
    for shape in "${shapes[@]}"; do
      name=${shape%%|*}
      # shellcheck disable=SC2086
      out=$("$RAFTCTL" bench --endpoints "$E" --duration "$DURATION" --warmup "$WARMUP" ${shape#*|} --json)
      python3 - "$build" "$round" "$name" "$out" <<'PY'
import json, sys
build, rnd, name, out = sys.argv[1:5]
r = json.loads(out)
lat = r["latency_us"]
print(f"{build}\tround {rnd}\t{name}\t{r['ops_per_sec']:.0f} ops/s\tp50 {lat['p50']} µs\tp99 {lat['p99']} µs\terrors {r['error_count']}")
PY
    done
    "$RAFTCTL" cluster stop --dir "$dir" >/dev/null
    rm -rf "$dir"
  done
done
