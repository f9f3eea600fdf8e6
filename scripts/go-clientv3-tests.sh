#!/usr/bin/env bash
# etcd's Go client (clientv3 and clientv3/concurrency 3.4, from Debian's golang-etcd-server-dev)
# against real raftdb processes: Tests/GoClientV3/src/raftdbclientv3, built in GOPATH mode (no
# modules, no network). The tests start and kill their own clusters on loopback ports
# 16000-16999 (RAFTDB_GO_PORT_BASE / RAFTDB_GO_PORT_SPAN move the range).
#
#   scripts/go-clientv3-tests.sh [RAFTDB_BINARY] [go test args...]
#
# RAFTDB_BINARY defaults to .build/release/raftdb. Further arguments go to `go test`, e.g.
# `-run 'TestKV|TestTxn'` or `-short` (skips the fault tests). The fault tests log their seed;
# RAFTDB_GO_FAULT_SEED=N replays a fault schedule. Exits non-zero when a test fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$root/.build/release/raftdb"
if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  binary="$1"
  shift
fi
case "$binary" in
  /*) ;;
  *) binary="$PWD/$binary" ;;
esac
if [ ! -x "$binary" ]; then
  echo "go-clientv3-tests: $binary is not an executable raftdb (build it, or pass its path)" >&2
  exit 2
fi
for need in go /usr/share/gocode/src/go.etcd.io/etcd/clientv3; do
  if ! command -v "$need" > /dev/null && [ ! -d "$need" ]; then
    echo "go-clientv3-tests: $need is missing; run scripts/install-test-deps.sh" >&2
    exit 2
  fi
done
export GOPATH="$root/Tests/GoClientV3:/usr/share/gocode"
export GO111MODULE=off
export GOFLAGS=""
export RAFTDB_BINARY="$binary"
cd "$root/Tests/GoClientV3/src/raftdbclientv3"
echo "== go test raftdbclientv3 against $binary"
exec go test -count=1 -v -timeout 8m "$@" .
