#!/usr/bin/env bash
# Where the raftdb leader spends its instructions under load: callgrind on the leader of a local
# 3-node cluster (the followers run natively), one dump per workload, summarised by function
# (inclusive and self) and by Swift module (self). Instruction counts do not depend on what else the
# machine is doing, so profiles from a busy machine compare fine with each other.
#
#   bench/profile.sh                          # 64-client put, then 16-client consistent get
#   SECONDS_PER_LOAD=20 bench/profile.sh
#
# Environment: SECONDS_PER_LOAD (default 15), OUT (directory, default bench/results/profile-DATE),
# SCRATCH (build folder, default .build-bench). Ports: raftdb HTTP 18191-18193, Raft 19191-19193.
# Also records `perf record -e cpu-clock` samples of the leader (without valgrind) when perf works.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
BIN=$SCRATCH/release
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-15}
OUT=${OUT:-$ROOT/bench/results/profile-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/raftdb-profile.XXXXXX)
PIDS=()
HTTP=(127.0.0.1:18191 127.0.0.1:18192 127.0.0.1:18193)
RAFT=(127.0.0.1:19191 127.0.0.1:19192 127.0.0.1:19193)
ENDPOINTS=$(IFS=,; echo "${HTTP[*]}")
# Generous timeouts: the leader runs some 50 times slower under valgrind.
TIMING=(-heartbeat-interval 100 -election-timeout 10000 -request-timeout 30000 -log-level warning)

log() { echo "[profile $(date +%H:%M:%S)] $*" >&2; }

stop_all() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 600); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2> /dev/null
  done
  PIDS=()
}
cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT

swift build -c release --package-path "$ROOT" --scratch-path "$SCRATCH" --product raftdb 2>&1 | grep -E "error|Build" >&2
swift build -c release --package-path "$ROOT" --scratch-path "$SCRATCH" --product raftctl 2>&1 | grep -E "error|Build" >&2

# Valgrind 3.19 (Debian 12) cannot read the DWARF that Swift 6.3 emits ("Possibly corrupted
# debuginfo file ... Giving up"): profile a copy without debug sections; the symbol table, which is
# all a per-function profile needs, stays. It also aborts on the sigsuspend() of dispatch_main(),
# which Swift's async main ends in; bench/valgrind-sigsuspend-shim.c works around that.
objcopy --strip-debug "$BIN/raftdb" "$WORK/raftdb-nodebug"
gcc -O2 -shared -fPIC -o "$WORK/sigsuspend-shim.so" "$ROOT/bench/valgrind-sigsuspend-shim.c"

# start_cluster LEADER_BINARY WRAPPER...: node01 (the leader: it bootstraps) as LEADER_BINARY under
# WRAPPER, the others natively.
start_cluster() {
  local leader_binary=$1
  shift
  rm -rf "$WORK/data"
  mkdir -p "$WORK/data"
  "$@" "$leader_binary" -id node01 -haddr "${HTTP[0]}" -raddr "${RAFT[0]}" "${TIMING[@]}" "$WORK/data/node01" \
    > "$WORK/node01.log" 2>&1 &
  LEADER_PID=$!
  PIDS+=("$LEADER_PID")
  for _ in $(seq 600); do
    curl -sf "http://${HTTP[0]}/status" 2> /dev/null | grep -q '"state":"leader"' && break
    sleep 0.2
  done
  for k in 1 2; do
    "$BIN/raftdb" -id "node0$((k + 1))" -haddr "${HTTP[$k]}" -raddr "${RAFT[$k]}" -join "${HTTP[0]}" "${TIMING[@]}" \
      "$WORK/data/node0$((k + 1))" > "$WORK/node0$((k + 1)).log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 600); do
    [ "$(curl -sf "http://${HTTP[0]}/status" 2> /dev/null | grep -o '"voter":true' | wc -l)" = 3 ] && break
    sleep 0.2
  done
  curl -sf "http://${HTTP[0]}/status" > "$WORK/status-start.json"
  grep -q '"state":"leader"' "$WORK/status-start.json" || { echo "node01 is not the leader" >&2; exit 1; }
}

leader_still_node01() {
  curl -sf "http://${HTTP[0]}/status" | grep -q '"state":"leader"'
}

# --- callgrind ------------------------------------------------------------------------------------
log "callgrind: starting the cluster with node01 under valgrind"
start_cluster "$WORK/raftdb-nodebug" env LD_PRELOAD="$WORK/sigsuspend-shim.so" \
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out.%p"
CALLGRIND_PID=$LEADER_PID
RAFTCTL="$BIN/raftctl"

log "callgrind: 64-client put for $SECONDS_PER_LOAD s"
callgrind_control -i on "$CALLGRIND_PID" > /dev/null
"$RAFTCTL" bench --endpoints "$ENDPOINTS" --op put --clients 64 --duration "$SECONDS_PER_LOAD" --warmup 0 \
  --timeout 30 | tee "$OUT/load-put-c64.txt" >&2
callgrind_control -d put-c64 "$CALLGRIND_PID" > /dev/null
callgrind_control -i off "$CALLGRIND_PID" > /dev/null
leader_still_node01 || log "WARNING: node01 lost leadership during the put load"

log "callgrind: writing the key space (not measured)"
"$RAFTCTL" bench --endpoints "$ENDPOINTS" --op get --level consistent --clients 16 --duration 1 --warmup 0 \
  --timeout 30 > /dev/null
log "callgrind: 16-client consistent get for $SECONDS_PER_LOAD s"
callgrind_control -z "$CALLGRIND_PID" > /dev/null
callgrind_control -i on "$CALLGRIND_PID" > /dev/null
"$RAFTCTL" bench --endpoints "$ENDPOINTS" --op get --level consistent --clients 16 --duration "$SECONDS_PER_LOAD" \
  --warmup 0 --no-populate --timeout 30 | tee "$OUT/load-get-consistent-c16.txt" >&2
callgrind_control -d get-consistent-c16 "$CALLGRIND_PID" > /dev/null
callgrind_control -i off "$CALLGRIND_PID" > /dev/null
leader_still_node01 || log "WARNING: node01 lost leadership during the get load"
stop_all

# summarise FILE NAME: top functions by inclusive and self instructions, and self by Swift module.
summarise() {
  local file=$1 name=$2
  callgrind_annotate --inclusive=yes --threshold=100 "$file" 2> /dev/null | swift demangle --simplified \
    > "$OUT/$name.inclusive.txt"
  callgrind_annotate --inclusive=no --threshold=100 "$file" 2> /dev/null > "$OUT/$name.self.mangled.txt"
  swift demangle --simplified < "$OUT/$name.self.mangled.txt" > "$OUT/$name.self.txt"
  python3 "$ROOT/bench/callgrind_modules.py" "$OUT/$name.self.mangled.txt" > "$OUT/$name.modules.txt"
  rm "$OUT/$name.self.mangled.txt"
  {
    echo "=== $name: top 40 by inclusive instructions"
    grep -E '^ *[0-9,]+ \(' "$OUT/$name.inclusive.txt" | head -40 | cut -c1-220
    echo
    echo "=== $name: top 30 by self instructions"
    grep -E '^ *[0-9,]+ \(' "$OUT/$name.self.txt" | head -30 | cut -c1-220
    echo
    echo "=== $name: self instructions by module"
    cat "$OUT/$name.modules.txt"
    echo
  } >> "$OUT/summary.txt"
}
: > "$OUT/summary.txt"
for dump in "$OUT"/callgrind.out.*; do
  case "$dump" in
    *.1) summarise "$dump" put-c64 ;;
    *.2) summarise "$dump" get-consistent-c16 ;;
    *) ;;
  esac
done

# --- perf (sampling, native speed) ----------------------------------------------------------------
if perf record -e cpu-clock -o /dev/null -- true > /dev/null 2>&1; then
  log "perf: cpu-clock samples of the native leader"
  start_cluster "$BIN/raftdb"
  for shape in "put-c64:--op put --clients 64" "get-consistent-c16:--op get --level consistent --clients 16"; do
    name=${shape%%:*}
    read -r -a arguments <<< "${shape#*:}"
    perf record -e cpu-clock -F 999 -g -p "$LEADER_PID" -o "$WORK/perf-$name.data" -- sleep "$((SECONDS_PER_LOAD + 2))" \
      > /dev/null 2>&1 &
    perf_pid=$!
    "$RAFTCTL" bench --endpoints "$ENDPOINTS" "${arguments[@]}" --duration "$SECONDS_PER_LOAD" --warmup 1 \
      --watch-pids "$LEADER_PID" | tee "$OUT/perf-load-$name.txt" >&2
    wait "$perf_pid" || true
    perf report -i "$WORK/perf-$name.data" --no-children --sort dso,symbol --stdio 2> /dev/null \
      | swift demangle --simplified | grep -E '^ +[0-9]' | head -40 > "$OUT/perf-$name.self.txt" || true
    perf report -i "$WORK/perf-$name.data" --children --sort symbol --stdio -g none 2> /dev/null \
      | swift demangle --simplified | grep -E '^ +[0-9]' | head -40 > "$OUT/perf-$name.children.txt" || true
    perf report -i "$WORK/perf-$name.data" --no-children --sort dso --stdio 2> /dev/null \
      | grep -E '^ +[0-9]' | head -15 > "$OUT/perf-$name.dso.txt" || true
  done
  stop_all
else
  log "perf record does not work here; callgrind only"
fi

cat "$OUT/summary.txt"
log "profiles in $OUT (callgrind_annotate or kcachegrind on callgrind.out.*)"
