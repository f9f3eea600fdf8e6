#!/usr/bin/env bash
# Memory and restart time with a large key space: a local 3-node raftdb is loaded with KEYS keys
# (16-byte keys, 256-byte values, written BATCH pairs per POST /key), then each node's resident memory
# is read from /proc; then every key is overwritten once and the history below that revision is
# compacted (issue 14's scenario), and RSS is read after each step (8 s after the compaction has
# applied everywhere: the nodes hand the dropped history back over that time). Last, one follower
# is restarted twice (SIGTERM, then kill -9) and timed from process start until it has applied
# everything the cluster had committed; its log lines on restoring the snapshot are printed.
#
#   bench/memory.sh                 # 1,000,000 keys
#   KEYS=100000 bench/memory.sh     # a quick look
#
# Environment: KEYS (default 1000000), BATCH (default 1000), OVERWRITE (default 1; 0 skips the
# overwrites and the compaction), SETTLE (seconds to wait after every node has applied a phase
# before RSS is read; default 2), BIN (default .build/release),
# DATA_PARENT (default /tmp), RAFTDB_FLAGS (extra raftdb flags; the defaults are used otherwise).
# Ports: HTTP 18291-18293, Raft 19291-19293. Everything started here is stopped by pid on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${KEYS:-1000000}
BATCH=${BATCH:-1000}
BIN=${BIN:-$ROOT/.build/release}

WORK=$(mktemp -d "${DATA_PARENT:-/tmp}/raftdb-memory.XXXXXX")
HTTP=(127.0.0.1:18291 127.0.0.1:18292 127.0.0.1:18293)
RAFT=(127.0.0.1:19291 127.0.0.1:19292 127.0.0.1:19293)
declare -A PID
log() { echo "[memory $(date +%H:%M:%S)] $*" >&2; }

cleanup() {
  set +e
  for name in "${!PID[@]}"; do kill "${PID[$name]}" 2> /dev/null; done
  sleep 1
  for name in "${!PID[@]}"; do kill -9 "${PID[$name]}" 2> /dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start() { # start INDEX [join]
  local i=$1 name="node0$(($1 + 1))"
  local args=(-id "$name" -haddr "${HTTP[$i]}" -raddr "${RAFT[$i]}" -log-level info ${RAFTDB_FLAGS:-})
  [ "$i" -gt 0 ] && [ "${2:-}" = join ] && args+=(-join "${HTTP[0]}")
  "$BIN/raftdb" "${args[@]}" "$WORK/$name" >> "$WORK/$name.log" 2>&1 &
  PID[$name]=$!
}
status() { curl -sf "http://$1/status"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
wait_until() { # wait_until SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out: $*"; exit 1; }
    sleep 0.05
  done
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

start 0
wait_until 20 curl -sf "http://${HTTP[0]}/health"
start 1 join
start 2 join
wait_until 30 sh -c "[ \$(curl -sf http://${HTTP[0]}/status | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"members\"]))') = 3 ]"
for name in node01 node02 node03; do log "$name idle: RSS $(rss_kib "${PID[$name]}") KiB"; done

# load PASS VALUE_CHARACTER: writes every key once with a 256-byte value of that character.
load() {
  python3 - "${HTTP[0]}" "$KEYS" "$BATCH" "$2" << 'PY'
import http.client, json, sys
host, keys, batch, fill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
connection = http.client.HTTPConnection(host, timeout=60)
value = fill * 256
for start in range(0, keys, batch):
    body = json.dumps({"k%015d" % i: value for i in range(start, min(keys, start + batch))})
    connection.request("POST", "/key", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        sys.exit(f"POST /key answered {response.status}")
print(json.loads(answer)["revision"])
PY
}
applied_everywhere() {
  local commit
  commit=$(status "${HTTP[0]}" | field commit_index)
  for i in 0 1 2; do
    wait_until 120 sh -c "[ \$(curl -sf http://${HTTP[$i]}/status | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"applied_index\"])') -ge $commit ]"
  done
  sleep "${SETTLE:-2}"
}
raw=$((KEYS * (16 + 256)))
report() { # report PHASE
  echo "  after $1:"
  for name in node01 node02 node03; do
    local pid=${PID[$name]} rss
    rss=$(rss_kib "$pid")
    echo "    $name: RSS $rss KiB ($(python3 -c "print(round($rss * 1024 / $raw, 2))")× raw), peak $(hwm_kib "$pid") KiB; data directory $(du -sk "$WORK/$name" | cut -f1) KiB"
  done
}

log "loading $KEYS keys of 16 B with 256 B values, $BATCH per request"
load_start=$(date +%s.%N)
load 1 v > /dev/null
load_end=$(date +%s.%N)
applied_everywhere
echo "raftdb memory: $KEYS keys loaded in $(python3 -c "print(round($load_end - $load_start, 1))") s; raw live data $((raw / 1024)) KiB (keys + values)"
report "the load"
if [ "${OVERWRITE:-1}" = 1 ]; then
  log "overwriting every key once"
  revision=$(load 2 w)
  applied_everywhere
  report "$KEYS overwrites (history of two changes a key)"
  log "compacting at revision $revision"
  curl -sf -X POST "http://${HTTP[0]}/compact" -d "{\"revision\": $revision}" > /dev/null
  applied_everywhere
  # The nodes hand the dropped history back to the system over the next 8 s
  # (releaseMemoryFreedByCompaction); read RSS once they have.
  sleep 8
  report "compaction at revision $revision"
fi
for name in node01 node02 node03; do
  grep -h "snapshot taken" "$WORK/$name.log" | tail -1 | sed "s/^/  $name, last snapshot: /" || true
done

restart() { # restart SIGNAL
  local signal=$1 name=node03 target
  target=$(status "${HTTP[0]}" | field commit_index)
  kill "-$signal" "${PID[$name]}"
  while kill -0 "${PID[$name]}" 2> /dev/null; do sleep 0.02; done
  local begin end
  begin=$(date +%s.%N)
  start 2
  wait_until 60 sh -c "[ \$(curl -sf http://${HTTP[2]}/status | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"applied_index\"])') -ge $target ]"
  end=$(date +%s.%N)
  echo "  restart of $name after SIG$signal: $(python3 -c "print(round($end - $begin, 2))") s until it had applied index $target; RSS then $(rss_kib "${PID[$name]}") KiB"
}
restart TERM
restart KILL
grep -h -iE "restored the state machine|node started|snapshot taken" "$WORK/node03.log" | tail -6 >&2 || true
