#!/usr/bin/env bash
# Watch fan-out (BENCHMARKS.md, "Watch fan-out"): one raftdb member, then `raftctl watch-bench`:
# puts paced at RATE/s with no watchers, with WATCHERS Server-Sent Events watches spread over KEYS
# keys, and with one stalled watcher added. Prints put and delivery latency for each phase.
#
#   bench/watch-fanout.sh                          # 10,000 watchers, 1,000 puts/s, 15 s per phase
#   WATCHERS=1000 DURATION=5 bench/watch-fanout.sh # a quick look
#   BUILD=0 bench/watch-fanout.sh                  # without building first
#   PIN=1 bench/watch-fanout.sh                    # the member on CPU 0, the generator on CPU 1
#   DATA_PARENT=/dev/shm bench/watch-fanout.sh     # the data directory on tmpfs: no disk stalls
#
# The member listens on 127.0.0.1:18091 (HTTP) and 19091 (Raft); it is stopped by pid on exit. Its
# data directory is under DATA_PARENT (default /tmp). The file limit must exceed WATCHERS (each
# watch is one connection on both sides).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WATCHERS=${WATCHERS:-10000}
KEYS=${KEYS:-1000}
RATE=${RATE:-1000}
DURATION=${DURATION:-15}
DATA_PARENT=${DATA_PARENT:-/tmp}
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -le "$((WATCHERS + 100))" ]; then
  echo "the file limit ($(ulimit -n)) must exceed WATCHERS + 100" >&2
  exit 1
fi
cd "$ROOT"
if [ "${BUILD:-1}" = 1 ]; then # BUILD=0: use what .build/release holds
  swift build -c release --product raftdb > /dev/null
  swift build -c release --product raftctl > /dev/null
fi
data=$(mktemp -d "$DATA_PARENT/raftdb-watch-bench.XXXXXX")
# PIN=1 keeps the load generator off the member's core (taskset), so that the member's own cost of
# delivering shows apart from the generator's.
member_cpu=() generator_cpu=()
if [ "${PIN:-0}" = 1 ]; then member_cpu=(taskset -c 0) generator_cpu=(taskset -c 1); fi
"${member_cpu[@]}" .build/release/raftdb -id bench -haddr 127.0.0.1:18091 -raddr 127.0.0.1:19091 \
  -max-connections $((WATCHERS + 1000)) "$data" > "$data.log" 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null; wait "$server" 2> /dev/null; rm -rf "$data" "$data.log"' EXIT
for _ in $(seq 100); do
  curl -sf 127.0.0.1:18091/version | grep -q '"cluster":3' && break
  sleep 0.1
done
echo "== $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), pinned: ${PIN:-0}"
"${generator_cpu[@]}" .build/release/raftctl watch-bench --endpoint 127.0.0.1:18091 --watchers "$WATCHERS" --keys "$KEYS" \
  --rate "$RATE" --duration "$DURATION" --member-pid "$server"
echo "server: $(grep -E '^(VmHWM|VmRSS)' /proc/$server/status | tr -s ' ' | tr '\n' ' ')"
