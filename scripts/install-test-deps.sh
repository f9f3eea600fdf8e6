#!/usr/bin/env bash
# Installs what the tests need beyond the Swift toolchain, from Debian's packages, when it is
# missing: curl (the watch tests read Server-Sent Events with it, as a user would), etcdctl 3.4
# from etcd-client (the etcd gRPC API's tests drive raftdb with it), and Go with etcd 3.4's Go
# sources (golang-go, golang-etcd-server-dev: scripts/go-clientv3-tests.sh builds clientv3 from
# them in GOPATH mode). Idempotent.
set -euo pipefail
missing=()
command -v curl > /dev/null || missing+=(curl)
command -v etcdctl > /dev/null || missing+=(etcd-client)
command -v go > /dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ] || missing+=(golang-etcd-server-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi
