#!/usr/bin/env bash
# A mixed-version cluster with a real older build (not a test override), for the cluster version
# gate (docs/API.md, "Cluster version"). Not part of CI: it needs a build of an older commit.
#
#   git worktree add --detach /tmp/raftdb-old b0441db
#   (cd /tmp/raftdb-old && swift build -c release --product raftdb)
#   swift build -c release --product raftdb
#   scripts/mixed-version.sh /tmp/raftdb-old/.build/release/raftdb .build/release/raftdb
#
# node01 runs OLD and bootstraps; node02 and node03 run NEW and join through it. The script checks
# that the cluster forms and replicates, that the cluster version stays 1 while OLD runs, that a
# compare-and-delete (cluster version 2) is refused before it is proposed, and that after node01 is
# upgraded in place the version rises and the command applies on every member.
set -euo pipefail
old="$1"
new="$2"
dir="$(mktemp -d)"
base="${RAFTDB_MIXED_FIRST_PORT:-15100}"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

http() { echo "127.0.0.1:$((base + 2 * $1))"; }
raft() { echo "127.0.0.1:$((base + 2 * $1 + 1))"; }
start() { # start N BINARY [join]
  local n="$1" binary="$2"
  local args=(-id "node0$n" -haddr "$(http "$n")" -raddr "$(raft "$n")" -heartbeat-interval 50
    -election-timeout 500)
  if [ "$#" -gt 2 ]; then args+=(-join "$3"); fi
  "$binary" "${args[@]}" "$dir/node0$n" >>"$dir/node0$n.log" 2>&1 &
  pids[$n]=$!
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "FAILED: $what"
      tail -20 "$dir"/node0*.log
      exit 1
    fi
    sleep 0.2
  done
  echo "ok: $what"
}
voters() { curl -sf "http://$(http 1)/status" | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"]; sys.exit(0 if sum(x["voter"] for x in m)==3 else 1)'; }
cluster_version_is() { # cluster_version_is N NODE...
  local want="$1"
  shift
  for n in "$@"; do
    [ "$(curl -sf "http://$(http "$n")/version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"])')" = "$want" ] || return 1
  done
}
leader() {
  for n in 1 2 3; do
    curl -sf "http://$(http "$n")/status" 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["state"]=="leader" else 1)' 2>/dev/null && { echo "$n"; return 0; }
  done
  return 1
}

start 1 "$old"
wait_for 20 "OLD node01 leads" leader
start 2 "$new" "$(http 1)"
start 3 "$new" "$(http 1)"
wait_for 30 "NEW node02 and node03 joined through OLD node01 as voters" voters
curl -sf -XPOST "http://$(http 1)/key" -d '{"lock": "holder"}' >/dev/null
echo "ok: a write through OLD node01 committed"
echo "OLD node01 GET /version: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://$(http 1)/version")"
sleep 5
wait_for 5 "NEW members report cluster version 1 while OLD runs" cluster_version_is 1 2 3

# Stop OLD node01; a NEW member leads but cannot ask node01, so the version stays 1.
kill "${pids[1]}"
wait "${pids[1]}" 2>/dev/null || true
wait_for 20 "a NEW member leads" leader
n="$(leader)"
code=$(curl -s -o "$dir/cad1" -w '%{http_code}' -XPOST "http://$(http "$n")/key/lock/cas" -d '{"expect": "holder", "value": null}')
echo "compare-and-delete at node0$n while node01 is down: HTTP $code $(cat "$dir/cad1")"
[ "$code" = 409 ] || { echo "FAILED: expected 409"; exit 1; }

# Upgrade node01 in place: the NEW build on OLD's data directory.
start 1 "$new"
wait_for 30 "the cluster version rises to 2 on every member once node01 runs NEW" cluster_version_is 2 1 2 3
n="$(leader)"
code=$(curl -s -o "$dir/cad2" -w '%{http_code}' -XPOST "http://$(http "$n")/key/lock/cas" -d '{"expect": "holder", "value": null}')
echo "compare-and-delete at node0$n after the upgrade: HTTP $code $(cat "$dir/cad2")"
[ "$code" = 200 ] && grep -q '"succeeded":true' "$dir/cad2" || { echo "FAILED"; exit 1; }
gone() { for n in 1 2 3; do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$(http "$n")/key/lock?level=stale")" = 404 ] || return 1; done; }
wait_for 10 "the key is gone on every member" gone
echo "PASSED (logs in $dir)"
