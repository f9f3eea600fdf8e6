#!/usr/bin/env bash
# Installs what the tests need beyond the Swift toolchain, from Debian's packages, when it is
# missing: curl (the watch tests read Server-Sent Events with it, as a user would) and etcdctl 3.4
# from etcd-client (the etcd gRPC API's tests drive raftdb with it). Idempotent.
set -euo pipefail
missing=()
command -v curl > /dev/null || missing+=(curl)
command -v etcdctl > /dev/null || missing+=(etcd-client)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
fi
