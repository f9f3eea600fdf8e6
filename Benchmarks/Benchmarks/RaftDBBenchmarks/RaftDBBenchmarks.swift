import BenchKVStore
import BenchRaftStorage
import BenchRaftWire
import Benchmark
import Foundation
import Logging
import NIOCore
import Raft

// Each benchmark times one unit of work per iteration (one proposal cycle, one frame, one batch, one
// command), so that its wall-clock figure reads directly as the cost of that unit. Allocation counts
// matter as much as time here: the optimization pass aims for no per-entry allocation on hot paths.
// A sample runs 1,000 iterations (scaling factor kilo; figures are per iteration): a benchmark's
// closure, set-up included, runs once per sample, and with one iteration per sample the figures
// measured a cold first operation on freshly built state (a first KV apply looked like 287 µs).

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = .init(
    metrics: [.wallClock, .cpuTotal, .throughput, .mallocCountTotal],
    warmupIterations: 10,
    scalingFactor: .kilo,
    maxDuration: .seconds(2),
    maxIterations: 1_000_000)

  // MARK: Raft core

  for batchSize in [1, 64] {
    Benchmark("Raft core: propose + takeReady + deliver, 3 nodes, \(batchSize) × 256 B") { benchmark in
      let cluster = CoreCluster()
      let batch = Array(repeating: [UInt8](repeating: 0xAB, count: 256), count: batchSize)
      benchmark.startMeasurement()
      for _ in benchmark.scaledIterations {
        try cluster.leader.propose(batch: batch)
        cluster.drain(cluster.leader)
        cluster.deliverAll()
      }
      benchmark.stopMeasurement()
      precondition(cluster.committedOnLeader >= batchSize, "nothing committed")
    }
  }

  // MARK: Frame codec

  let append = Message(
    from: NodeID(1), to: NodeID(2), term: 7,
    body: .appendEntries(
      AppendEntries(
        prevLogIndex: 1_000, prevLogTerm: 7,
        entries: (1...64).map {
          LogEntry(index: 1_000 + UInt64($0), term: 7, data: [UInt8](repeating: 0x5A, count: 256))
        },
        leaderCommit: 990)))

  Benchmark("Frame codec: encode append of 64 × 256 B") { benchmark in
    var buffer = ByteBufferAllocator().buffer(capacity: 32 << 10)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      buffer.clear()
      WireCodec.encode(append, into: &buffer)
      blackHole(buffer.readableBytes)
    }
  }

  Benchmark("Frame codec: decode append of 64 × 256 B") { benchmark in
    var encoded = ByteBufferAllocator().buffer(capacity: 32 << 10)
    WireCodec.encode(append, into: &encoded)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      var buffer = encoded
      guard case .message(let message) = try WireCodec.decode(&buffer) else { fatalError("not a message") }
      blackHole(message)
    }
  }

  // MARK: WAL append

  let payload = [UInt8](repeating: 0x5A, count: 256)
  for batchSize in [1, 64] {
    Benchmark("WAL append: MemoryStorage write + sync, \(batchSize) × 256 B") { benchmark in
      let storage = MemoryStorage()
      _ = try storage.recover()
      try appendBatches(to: storage, batchSize: batchSize, payload: payload, benchmark: benchmark) { next in
        // Keep the in-memory log small, as a node's snapshots would.
        if next % 8_192 < UInt64(batchSize) { try storage.compact(through: next - 1) }
      }
    }

    Benchmark(
      "WAL append: FileStorage write + fdatasync, \(batchSize) × 256 B",
      configuration: .init(maxDuration: .seconds(3), maxIterations: 20_000)
    ) { benchmark in
      let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("raftdb-wal-bench-\(getpid())-\(batchSize)").path
      try? FileManager.default.removeItem(atPath: directory)
      defer { try? FileManager.default.removeItem(atPath: directory) }
      var logger = Logger(label: "wal-bench")
      logger.logLevel = .error
      let storage = try FileStorage(directory: directory, logger: logger)
      defer { storage.close() }
      _ = try storage.recover()
      try appendBatches(to: storage, batchSize: batchSize, payload: payload, benchmark: benchmark) { _ in }
    }
  }

  // MARK: KV apply

  Benchmark("KV apply: KVStateMachine.apply of a 1-pair put (16 B key, 256 B value)") { benchmark in
    let value = String(repeating: "v", count: 256)
    let commands = (0..<10_000).map { k in
      KVRequest(
        command: .put([
          KeyValue(key: "k" + String(repeating: "0", count: 15 - String(k).count) + String(k), value: value)
        ]),
        proposedAtMillis: 1_700_000_000_000
      ).encoded()
    }
    let machine = KVStateMachine()
    var index: UInt64 = 0
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      index += 1
      blackHole(machine.apply(index: index, data: commands[Int(index % 10_000)]))
    }
  }

  Benchmark("KV apply: same, with an Idempotency-Key (as RaftDBClient sends)") { benchmark in
    let value = String(repeating: "v", count: 256)
    let machine = KVStateMachine()
    let keys = (0..<10_000).map { "k" + String(repeating: "0", count: 15 - String($0).count) + String($0) }
    // Encoded up front: each needs a fresh idempotency key, and encoding is not what is measured.
    let count = 200_000
    let commands = (0..<count).map { k in
      KVRequest(
        command: .put([KeyValue(key: keys[k % keys.count], value: value)]),
        idempotencyKey: "bench-\(k)", proposedAtMillis: 1_700_000_000_000
      ).encoded()
    }
    var index: UInt64 = 0
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      index += 1
      blackHole(machine.apply(index: index, data: commands[Int(index) % count]))
    }
  }

  Benchmark("KV request: encode + decode of a 1-pair put") { benchmark in
    let request = KVRequest(
      command: .put([KeyValue(key: "k000000000012345", value: String(repeating: "v", count: 256))]),
      idempotencyKey: nil, proposedAtMillis: 1_700_000_000_000)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      blackHole(try KVRequest(decoding: request.encoded()))
    }
  }
}

/// Times batches of `batchSize` entries written and synced, as a node persisting a `Ready` does;
/// `afterBatch` gets the next index to write.
func appendBatches(
  to storage: any RaftStorage, batchSize: Int, payload: [UInt8], benchmark: Benchmark,
  afterBatch: (UInt64) throws -> Void
) throws {
  var next: UInt64 = 1
  benchmark.startMeasurement()
  for _ in benchmark.scaledIterations {
    let entries = (0..<UInt64(batchSize)).map { LogEntry(index: next + $0, term: 1, data: payload) }
    next += UInt64(batchSize)
    try storage.write(PersistBatch(entries: entries))
    _ = try storage.sync()
    try afterBatch(next)
  }
}
