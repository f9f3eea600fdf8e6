// State machine benchmark (BENCHMARKS.md, "Key-value stores"): apply throughput and memory of the
// multi-version store (issue 14) beside the current key-value state machine, on the same keys and
// values, in one process, one after the other.
//
//   swift build -c release --product kv-store-bench
//   .build/release/kv-store-bench [--keys N] [--value-bytes B]
//
// For each store: N puts of new 16-byte keys (hex text), then N overwrites of the same keys, then (MVCC only)
// a compaction of all but the newest revision, then 1,000 and 10,000 more puts each followed by a compaction
// (what an automatic compaction meets: few changes since the last one), then 1,000 reads of a range that holds 1,000 keys. Memory is
// the process's resident set before and after, so run one store per process for clean figures
// (`--only mvcc` or `--only kv`). The `kv` pass, through the replicated state machine, ends with a
// compaction, then a snapshot serialized and restored into a new machine.

import Foundation
import KVStore

#if canImport(Glibc)
  import Glibc
#endif

var keys = 1_000_000
var valueBytes = 256
var only: String?
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let argument = arguments.next() {
  switch argument {
  case "--keys": keys = Int(arguments.next() ?? "") ?? keys
  case "--value-bytes": valueBytes = Int(arguments.next() ?? "") ?? valueBytes
  case "--only": only = arguments.next()
  default:
    FileHandle.standardError.write(
      Data("usage: kv-store-bench [--keys N] [--value-bytes B] [--only mvcc|kv]\n".utf8))
    exit(64)
  }
}

func residentMiB() -> Double {
  guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
    let pages = text.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
  else { return 0 }
  return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

func measure(_ label: String, operations: Int, _ body: () throws -> Void) rethrows {
  let start = ContinuousClock.now
  try body()
  let elapsed = ContinuousClock.now - start
  let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
  print(
    "\(label): \(operations) in \(String(format: seconds < 1 ? "%.4f" : "%.2f", seconds)) s, \(Int(Double(operations) / seconds)) /s, RSS \(String(format: "%.0f", residentMiB())) MiB"
  )
}

/// 16-character hex keys (the current store takes strings), spread over the key space rather than
/// in insertion order; the same bytes for both stores.
let keyText: [String] = (0..<keys).map { i in
  let x = UInt64(i) &* 0x9E37_79B9_7F4A_7C15
  let hex = String(x ^ (x >> 29), radix: 16)
  return String(repeating: "0", count: 16 - hex.count) + hex
}
let keyBytes: [[UInt8]] = keyText.map { Array($0.utf8) }
let value = [UInt8](repeating: 0x61, count: valueBytes)
let rawLive = Double(keys * (16 + valueBytes)) / 1_048_576
print(
  "kv-store-bench: \(keys) keys of 16 B, values of \(valueBytes) B (raw live data \(String(format: "%.0f", rawLive)) MiB); RSS at start \(String(format: "%.0f", residentMiB())) MiB"
)

if only == nil || only == "mvcc" {
  var store = MVCCStore()
  try measure("mvcc put new", operations: keys) {
    for key in keyBytes { _ = try store.put(PutRequest(key: key, value: value)) }
  }
  try measure("mvcc put existing", operations: keys) {
    for key in keyBytes { _ = try store.put(PutRequest(key: key, value: value)) }
  }
  try measure("mvcc compact", operations: 1) { try store.compact(store.revision) }
  // What an automatic compaction meets: a few changes since the last one, over a large store.
  for changes in [1_000, 10_000] {
    for i in 0..<changes { _ = try store.put(PutRequest(key: keyBytes[(i * 7_919) % keys], value: value)) }
    try measure("mvcc compact after \(changes) changes", operations: 1) { try store.compact(store.revision) }
  }
  let sorted = keyBytes.sorted { $0.lexicographicallyPrecedes($1) }
  try measure("mvcc range of 1,000 keys", operations: 1_000) {
    for i in 0..<1_000 {
      let first = (i * 997) % (keys - 1_001)
      // A range that holds 1,000 keys: etcd's count makes a range read to its end, so an open
      // range with a limit would scan to the end of the key space (as etcd's does).
      let request = RangeRequest(range: KeyRange(key: sorted[first], rangeEnd: sorted[first + 1_000]))
      let found = try store.range(request).kvs.count
      precondition(found == 1_000)
    }
  }
  print("mvcc: revision \(store.revision), live keys \(store.liveKeyCount)")
}

if only == nil || only == "kv" {
  let machine = KVStateMachine()
  let text = String(decoding: value, as: UTF8.self)
  let requests = keyText.map { key in
    KVRequest(command: .put([KeyValue(key: key, value: text)]), proposedAtMillis: 1).encoded()
  }
  var index: UInt64 = 0
  measure("kv put new", operations: keys) {
    for request in requests {
      index += 1
      _ = machine.apply(index: index, data: request)
    }
  }
  measure("kv put existing", operations: keys) {
    for request in requests {
      index += 1
      _ = machine.apply(index: index, data: request)
    }
  }
  measure("kv list of 1,000 keys (a scan of every key)", operations: 10) {
    for _ in 0..<10 { precondition(machine.list(prefix: "", limit: 1_000).count == 1_000) }
  }
  // Issue 14's restart figure without the disk: the state after the overwrites and a compaction,
  // serialized as a snapshot and decoded into a new machine (what a restart or an install does
  // before replaying the log's tail).
  for command in [
    KVCommand.setClusterVersion(ClusterVersion.latest), .compact(revision: Int64(machine.revision)),
  ] {
    index += 1
    _ = machine.apply(index: index, data: KVRequest(command: command, proposedAtMillis: 1).encoded())
  }
  var chunks: [[UInt8]] = []
  measure("kv snapshot serialize (after compaction)", operations: keys) {
    machine.snapshot().serialize(chunkBytes: 1 << 20) { chunks.append($0) }
  }
  print("kv snapshot: \(chunks.reduce(0) { $0 + $1.count }) bytes in \(chunks.count) chunks")
  let restored = KVStateMachine()
  try measure("kv snapshot restore (decode and build)", operations: keys) {
    var next = chunks.makeIterator()
    try restored.restore(appliedIndex: index) { next.next() }
  }
  precondition(restored.count == keys)
}
