#!/usr/bin/env bash
# End-to-end benchmark: the physical limits, a local 3-node raftdb and a local 3-member etcd (through
# its gRPC-gateway JSON endpoints), measured side by side in one run, into one table with ratios.
#
#   bench/run.sh                       # 10 s per shape after 2 s of warm-up, about 5 minutes
#   DURATION=3 WARMUP=1 bench/run.sh   # a quick look
#   bench/run.sh --skip-etcd           # raftdb and the limits only
#
# Environment: DURATION (s, default 10), WARMUP (s, default 2), KEYS (default 10000), OUT (report
# path, default bench/results/run-DATE.md; the raw JSON lines go next to it), DATA_PARENT (where the
# data directories go, default /tmp: pick the file system you care about), SCRATCH (build folder,
# default .build-bench), WAIT_IDLE (seconds to wait for load average < 1 first, default 0), SOURCE
# (how to describe the code measured, default the git commit).
#
# Servers listen on loopback only: raftdb HTTP 18091-18093, Raft 19091-19093; etcd clients 12379,
# 12381, 12383, peers 12380, 12382, 12384. Everything started here is stopped by pid on exit.
#
# Both clusters run during the whole measurement and the shapes alternate raftdb, etcd, raftdb, ...
# so that drift of a shared machine (figures vary ±20% between runs) hits both alike.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
KEYS=${KEYS:-10000}
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
DATA_PARENT=${DATA_PARENT:-/tmp}
WAIT_IDLE=${WAIT_IDLE:-0}
SKIP_ETCD=0
SKIP_BUILD=0
for argument in "$@"; do
  case "$argument" in
    --skip-etcd) SKIP_ETCD=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    *) echo "usage: bench/run.sh [--skip-etcd] [--skip-build]" >&2; exit 2 ;;
  esac
done
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$ROOT/bench/results/run-$STAMP.md}
mkdir -p "$(dirname "$OUT")"
JSONL="${OUT%.md}.jsonl"
: > "$JSONL"

RAFTDB_HTTP=(127.0.0.1:18091 127.0.0.1:18092 127.0.0.1:18093)
RAFTDB_ENDPOINTS=$(IFS=,; echo "${RAFTDB_HTTP[*]}")
ETCD_CLIENT=(127.0.0.1:12379 127.0.0.1:12381 127.0.0.1:12383)
ETCD_PEER=(127.0.0.1:12380 127.0.0.1:12382 127.0.0.1:12384)
ETCD_ENDPOINTS=$(IFS=,; echo "${ETCD_CLIENT[*]}")

WORK=$(mktemp -d "$DATA_PARENT/raftdb-bench.XXXXXX")
RAFTDB_DIR=$WORK/raftdb
ETCD_DIR=$WORK/etcd
ETCD_PIDS=()
RAFTDB_STARTED=0
BIN=$SCRATCH/release
COMMANDS=()

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }

cleanup() {
  set +e
  if [ "$RAFTDB_STARTED" = 1 ]; then "$BIN/raftctl" cluster stop --dir "$RAFTDB_DIR" > /dev/null 2>&1; fi
  for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2> /dev/null; done
  for pid in "${ETCD_PIDS[@]}"; do
    for _ in $(seq 150); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2> /dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- machine --------------------------------------------------------------------------------------
if [ "$WAIT_IDLE" -gt 0 ]; then
  waited=0
  while awk '{exit !($1 > 1.0)}' /proc/loadavg && [ "$waited" -lt "$WAIT_IDLE" ]; do
    log "load average $(cut -d' ' -f1-3 /proc/loadavg) > 1; waiting"
    sleep 15
    waited=$((waited + 15))
  done
fi
{
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); source: ${SOURCE:-git $(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2> /dev/null || echo ' with local changes')}"
  echo "- nproc: $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "- kernel: $(uname -sr)"
  echo "- free -g: $(free -g | awk '/^Mem:/ {print $2 " GiB total, " $4 " GiB free, " $7 " GiB available"}'); swap $(free -g | awk '/^Swap:/ {print $2 " GiB"}')"
  echo "- df -h of the data directory ($WORK): $(df -hT "$WORK" | tail -1 | awk '{print $1, $2, $3 " size,", $5 " avail,", $6 " used, on", $7}')"
  echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- busiest processes before the run (top, 1 s): $(top -b -n 2 -d 1 -w 200 | awk '/^top -/ {n++} n == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 5 {printf "%s %s%%; ", $12, $9}')"
  echo "- etcd: $(if command -v etcd > /dev/null; then etcd --version | sed -n 1p; else echo 'not installed yet'; fi)"
  echo "- swift: $(swift --version 2>&1 | head -1)"
} > "$WORK/machine.md"
cat "$WORK/machine.md" >&2

# --- build ----------------------------------------------------------------------------------------
if [ "$SKIP_BUILD" = 0 ]; then
  log "building release binaries into $SCRATCH"
  for product in raftdb raftctl raft-storage-bench; do
    swift build -c release --package-path "$ROOT" --scratch-path "$SCRATCH" --product "$product" 2>&1 \
      | grep -E "error|Compiling|Build" >&2 || true
    [ -x "$BIN/$product" ] || { echo "build of $product failed" >&2; exit 1; }
  done
fi

# bench NAME SYSTEM ARGS...: one raftctl bench run, its JSON line tagged and appended to $JSONL.
bench() {
  local name=$1 system=$2
  shift 2
  local command=("$BIN/raftctl" bench --duration "$DURATION" --warmup "$WARMUP" --keys "$KEYS" --json "$@")
  COMMANDS+=("${command[*]#$ROOT/}")
  log "$system $name: ${command[*]:1}"
  local line
  line=$("${command[@]}")
  # What else ran during the shape: the 1-minute load average (which includes this run's own servers
  # and generator, about 2-3 when busy) and the busiest processes not started here.
  local load others
  load=$(cut -d' ' -f1 /proc/loadavg)
  others=$(ps -eo pcpu,comm --sort=-pcpu --no-headers | grep -vE ' (raftdb|etcd|raftctl)$' | head -2 | awk '{printf "%s %s%% ", $2, $1}')
  echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["name"]=sys.argv[1]; d["system"]=sys.argv[2]; d["load1"]=float(sys.argv[3]); d["others"]=sys.argv[4]; print(json.dumps(d))' "$name" "$system" "$load" "$others" >> "$JSONL"
  echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); l=d["latency_us"]; print("   %.0f ops/s  p50 %d µs  p99 %d µs  errors %d  generator %.1f µs/op (%.0f%% core)" % (d["ops_per_sec"], l["p50"], l["p99"], d["error_count"], d["generator"]["cpu_us_per_op"], d["generator"]["cpu_percent_of_core"]))' >&2
}

# --- physical limits ------------------------------------------------------------------------------
log "fdatasync of 256-byte writes on $WORK (raft-storage-bench, 2 interleaved rounds of 1.5 s each)"
COMMANDS+=("${BIN#$ROOT/}/raft-storage-bench --dir \$DATA --rounds 2 --seconds 1.5")
"$BIN/raft-storage-bench" --dir "$WORK" --rounds 2 --seconds 1.5 > "$WORK/storage.txt"
python3 - "$WORK/storage.txt" >> "$JSONL" << 'EOF'
import json, re, sys
for line in open(sys.argv[1]):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 5 or not cells[0].startswith("raw pwrite"):
        continue
    name = "fsync-overwrite" if "overwriting" in cells[0] else "fsync-append"
    print(json.dumps({"system": "limit", "name": name, "what": cells[0],
                      "ops_per_sec": float(cells[1].replace(",", "")),
                      "latency_us": {"p50": float(cells[3].replace(",", "")),
                                     "p99": float(cells[4].replace(",", ""))}}))
EOF
grep -E "raw pwrite|WAL" "$WORK/storage.txt" >&2 || true
bench echo-c1 limit --op echo --clients 1
bench echo-c16 limit --op echo --clients 16

# --- start both clusters --------------------------------------------------------------------------
log "starting raftdb (3 nodes) in $RAFTDB_DIR"
COMMANDS+=("${BIN#$ROOT/}/raftctl cluster start --nodes 3 --dir \$DATA/raftdb --http-port 18091 --raft-port 19091")
"$BIN/raftctl" cluster start --nodes 3 --dir "$RAFTDB_DIR" --http-port 18091 --raft-port 19091 > "$WORK/raftdb-start.txt"
RAFTDB_STARTED=1
RAFTDB_PIDS=$(python3 -c 'import json,sys; print(",".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$RAFTDB_DIR/cluster.json")

if [ "$SKIP_ETCD" = 0 ]; then
  if ! command -v etcd > /dev/null || ! command -v etcdctl > /dev/null; then
    log "etcd not installed: installing Debian's etcd-server and etcd-client"
    apt-cache policy etcd-server >&2 || true
    if ! apt-cache policy etcd-server | grep -q 'Candidate: [0-9]'; then apt-get update >&2; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >&2
  fi
  log "starting etcd (3 members, default fsync behaviour) in $ETCD_DIR"
  mkdir -p "$ETCD_DIR"
  cluster=""
  for i in 0 1 2; do cluster+="${cluster:+,}e$((i + 1))=http://${ETCD_PEER[$i]}"; done
  for i in 0 1 2; do
    etcd --name "e$((i + 1))" --data-dir "$ETCD_DIR/e$((i + 1))" \
      --listen-client-urls "http://${ETCD_CLIENT[$i]}" --advertise-client-urls "http://${ETCD_CLIENT[$i]}" \
      --listen-peer-urls "http://${ETCD_PEER[$i]}" --initial-advertise-peer-urls "http://${ETCD_PEER[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-token raftdb-bench --initial-cluster-state new \
      --logger zap --log-outputs stderr --log-level warn > "$ETCD_DIR/e$((i + 1)).log" 2>&1 &
    ETCD_PIDS+=($!)
  done
  COMMANDS+=("etcd --name eN --data-dir \$DATA/etcd/eN --listen-client-urls http://127.0.0.1:1237{9,1,3} --listen-peer-urls http://127.0.0.1:123{80,82,84} --initial-cluster e1=...,e2=...,e3=... --initial-cluster-state new --logger zap --log-level warn (three members, other flags default)")
  for _ in $(seq 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health > /dev/null 2>&1; then break; fi
    sleep 0.2
  done
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint status -w table >&2
  ETCD_PIDS_CSV=$(IFS=,; echo "${ETCD_PIDS[*]}")
fi

# both NAME ARGS...: the same shape on raftdb, then on etcd.
both() {
  local name=$1
  shift
  bench "$name" raftdb --target raftdb --endpoints "$RAFTDB_ENDPOINTS" --watch-pids "$RAFTDB_PIDS" "$@"
  if [ "$SKIP_ETCD" = 0 ]; then
    bench "$name" etcd --target etcd --endpoints "$ETCD_ENDPOINTS" --watch-pids "$ETCD_PIDS_CSV" "$@"
  fi
}

# --- the shapes -----------------------------------------------------------------------------------
both noop-c1 --op noop --clients 1 --connect leader
both noop-c16 --op noop --clients 16 --connect leader
both put-c1 --op put --clients 1
both put-c16 --op put --clients 16
both put-c64 --op put --clients 64
# The first get run writes the whole key space; the others reuse it.
both get-default-c16 --op get --level default --clients 16
both get-consistent-c16 --op get --level consistent --clients 16 --no-populate
both get-stale-c16 --op get --level stale --clients 16 --no-populate
both get-stale-leader-c16 --op get --level stale --clients 16 --no-populate --connect leader

# --- report ---------------------------------------------------------------------------------------
{
  echo "## Run $STAMP"
  echo
  echo "**Machine.**"
  echo
  cat "$WORK/machine.md"
  echo "- load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  python3 "$ROOT/bench/report.py" "$JSONL" "$DURATION" "$WARMUP"
  echo
  echo "**Commands** (\$DATA is a fresh temporary directory under $DATA_PARENT):"
  echo
  echo '```sh'
  echo "DURATION=$DURATION WARMUP=$WARMUP KEYS=$KEYS bench/run.sh$([ "$SKIP_ETCD" = 1 ] && echo ' --skip-etcd')"
  echo "# which ran:"
  printf '%s\n' "${COMMANDS[@]}"
  echo '```'
} > "$OUT"
cat "$OUT"
log "report written to $OUT (raw figures: $JSONL)"
