#!/usr/bin/env bash
# Regenerates Sources/EtcdAPI/Generated/ (the Swift messages and gRPC service stubs of etcd's v3
# API) from the protos of etcd 3.4 in Debian's golang-etcd-server-dev. The output is committed, so
# neither a build nor CI runs this: run it only to change the protos, the plugins or their options.
#
#   scripts/generate-etcd-protos.sh [PLUGIN_DIR]
#
# The protos: etcdserver/etcdserverpb/rpc.proto (KV, Watch, Lease, Cluster, Maintenance, Auth),
# mvcc/mvccpb/kv.proto, auth/authpb/auth.proto, etcdserver/api/v3lock/v3lockpb/v3lock.proto and
# etcdserver/api/v3election/v3electionpb/v3election.proto, copied to a temporary folder under the
# names they import each other by (etcd/mvcc/mvccpb/kv.proto, ...). In the copies, before protoc
# reads them, these lines are removed, because their definitions are not in Debian's protoc nor in
# the Swift generators, and protoc refuses a file whose imports or options it cannot resolve:
#   - `import "gogoproto/gogo.proto";`, the file options `option (gogoproto.*) = ...;` and any field
#     options `[(gogoproto.*) = ...]`: hints to gogo/protobuf's Go code generator (marshalers,
#     getters, enum prefixes, nullability). They change no field, number or type: no effect on the
#     wire.
#   - `import "google/api/annotations.proto";` (with its `// for grpc-gateway` comment) and each
#     `option (google.api.http) = { post: "/v3/..." body: "*" };` block in the rpcs: the routes of
#     etcd's JSON gateway (grpc-gateway), which raftdb does not serve; its own HTTP API is separate.
# The script stops if either name is still in a copy afterwards (an option it did not expect).
#
# Versions used for the committed output: protoc 3.21.12 (Debian's protobuf-compiler
# 3.21.12-3+deb12u1), golang-etcd-server-dev 3.4.23-4, protoc-gen-swift 1.39.0 (apple/swift-protobuf)
# and protoc-gen-grpc-swift-2 2.4.1 (grpc/grpc-swift-protobuf). Both plugins run with
# Visibility=Public and FileNaming=PathToUnderscores (etcd_mvcc_mvccpb_kv.pb.swift, ...: no two
# protos named rpc.proto can collide), the gRPC one with Server=true and Client=true.
#
# Installing protoc and the protos (Debian):
#   apt-get install -y protobuf-compiler golang-etcd-server-dev
#
# Building the plugins, once, in a scratch package outside this repository (about 2 to 10 minutes of
# CPU; the package's .build holds copies of the packages, so it stays out of the repository):
#   mkdir -p /work/protoc-plugins && cd /work/protoc-plugins
#   cat > Package.swift <<'SWIFT'
#   // swift-tools-version: 6.1
#   import PackageDescription
#   let package = Package(
#     name: "protoc-plugins",
#     dependencies: [
#       .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
#       .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "2.4.1"),
#     ]
#   )
#   SWIFT
#   swift build -c release --product protoc-gen-swift
#   swift build -c release --product protoc-gen-grpc-swift-2
# PLUGIN_DIR (or $ETCD_PROTOC_PLUGINS) is the folder holding both binaries; by default
# /work/protoc-plugins/.build/release. KEEP_TMP=1 keeps the stripped protos, to diff them with
# Debian's.
set -euo pipefail
cd "$(dirname "$0")/.."

etcd_src=/usr/share/gocode/src/go.etcd.io/etcd
plugin_dir="${1:-${ETCD_PROTOC_PLUGINS:-/work/protoc-plugins/.build/release}}"
out=Sources/EtcdAPI/Generated
protos=(
  mvcc/mvccpb/kv.proto
  auth/authpb/auth.proto
  etcdserver/etcdserverpb/rpc.proto
  etcdserver/api/v3lock/v3lockpb/v3lock.proto
  etcdserver/api/v3election/v3electionpb/v3election.proto
)

fail() {
  echo "generate-etcd-protos: $*" >&2
  exit 1
}

command -v protoc > /dev/null \
  || fail "protoc is missing: apt-get install -y protobuf-compiler (see this script's header)"
[ -f "$etcd_src/etcdserver/etcdserverpb/rpc.proto" ] \
  || fail "etcd's protos are missing from $etcd_src: apt-get install -y golang-etcd-server-dev"
for plugin in protoc-gen-swift protoc-gen-grpc-swift-2; do
  [ -x "$plugin_dir/$plugin" ] \
    || fail "$plugin_dir/$plugin is missing: build it as this script's header says, or pass its folder"
done

echo "== $(protoc --version), protoc-gen-swift $("$plugin_dir/protoc-gen-swift" --version | awk '{print $NF}')," \
  "protoc-gen-grpc-swift-2 $("$plugin_dir/protoc-gen-grpc-swift-2" --version | awk '{print $NF}')," \
  "golang-etcd-server-dev $(dpkg-query -W -f '${Version}' golang-etcd-server-dev 2> /dev/null || echo '?')"

tmp="$(mktemp -d)"
if [ -n "${KEEP_TMP:-}" ]; then
  echo "== KEEP_TMP: the stripped protos stay in $tmp/proto"
else
  trap 'rm -rf "$tmp"' EXIT
fi
mkdir -p "$tmp/proto" "$tmp/out"

for proto in "${protos[@]}"; do
  mkdir -p "$tmp/proto/etcd/$(dirname "$proto")"
  # Line by line: the two imports, the gateway comment and gogoproto's file options; then over the
  # whole file: each google.api.http block (it spans lines, and its additional_bindings nest braces)
  # and gogoproto's field options.
  grep -v -E '^\s*(import "gogoproto/gogo\.proto";|import "google/api/annotations\.proto";|// for grpc-gateway$|option \(gogoproto\.[a-z_]+\) = [a-z]+;)\s*$' \
    "$etcd_src/$proto" \
    | perl -0pe '
        s/\n[ \t]*option \(google\.api\.http\) = (\{(?:[^{}]++|(?1))*\});[ \t]*//g;
        s/\s*\[\s*\(gogoproto\.\w+\)\s*=\s*[^,\]]+(?:,\s*\(gogoproto\.\w+\)\s*=\s*[^,\]]+)*\s*\]//g;
      ' > "$tmp/proto/etcd/$proto"
  if grep -n -E 'gogoproto|google\.api' "$tmp/proto/etcd/$proto"; then
    fail "$proto still names gogoproto or google.api after stripping (above): extend the stripping"
  fi
done

(
  cd "$tmp/proto"
  protoc \
    --plugin=protoc-gen-swift="$plugin_dir/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$plugin_dir/protoc-gen-grpc-swift-2" \
    --swift_opt=Visibility=Public,FileNaming=PathToUnderscores \
    --swift_out="$tmp/out" \
    --grpc-swift-2_opt=Visibility=Public,FileNaming=PathToUnderscores,Server=true,Client=true \
    --grpc-swift-2_out="$tmp/out" \
    "${protos[@]/#/etcd/}"
)

# The gRPC generator writes a file for every proto, one that only says so for a proto without a
# service (kv.proto, auth.proto): those are left out.
grep -l -x '// This file contained no services.' "$tmp/out"/*.grpc.swift | xargs -r rm -f

# Generated code is not held to .swift-format: each file must open with swift-format's opt-out (both
# generators write it today; this adds it if a later version does not).
for file in "$tmp/out"/*.swift; do
  if ! grep -q '^// swift-format-ignore-file$' "$file"; then
    { echo '// swift-format-ignore-file'; cat "$file"; } > "$file.tmp" && mv "$file.tmp" "$file"
  fi
done

mkdir -p "$out"
rm -f "$out"/*.swift
cp "$tmp/out"/*.swift "$out/"
echo "== wrote $out:"
wc -l "$out"/*.swift
