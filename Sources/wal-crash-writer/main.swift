// The child process of the WAL crash test (Tests/RaftStorageTests/CrashTests.swift).
//
// It opens a FileStorage in the given directory, recovers, and then writes like a Raft node for as
// long as it lives: batches of random-size entries, group-committed by sync(); now and then a
// follower's truncation of a conflicting suffix, a new term or vote, a local snapshot followed by
// compaction, or a snapshot received from a leader. The test kills it with SIGKILL at a random
// moment and checks that everything it announced as durable survived.
//
// Every claim goes to stdout as one line, written with a single write(2) right after the call that
// made it true returned (a kill can cut only the line being written, which the test ignores):
//
//   D <index> <term>   the log holds entry <index> with term <term> (or a snapshot covers <index>)
//   S <index> <term>   a snapshot at <index> is committed
//   H <term> <vote>    the hard state has this term and vote (vote 0: none)
//
// A claim about to be withdrawn (a truncation below the last D, or an install of a received
// snapshot) is first weakened by a new D line, so the latest line is always true.
//
// Entry content is a function of index and term alone, so the test can verify any entry it finds.

import Logging
import Raft
import RaftStorage

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

func entryData(index: UInt64, term: UInt64) -> [UInt8] {
  let size = Int((index &* 2_654_435_761 ^ term &* 40_503) % 300)
  var state = index &* 0x9E37_79B9_7F4A_7C15 ^ term &* 0xBF58_476D_1CE4_E5B9
  return (0..<size).map { _ in
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return UInt8(truncatingIfNeeded: state >> 33)
  }
}

func snapshotData(index: UInt64, term: UInt64) -> [UInt8] {
  entryData(index: index ^ 0xABCD, term: term)
}

func emit(_ line: String) {
  let bytes = Array((line + "\n").utf8)
  var done = 0
  while done < bytes.count {
    let written = bytes[done...].withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
    if written < 0 && errno == EINTR { continue }
    guard written > 0 else { exit(3) }
    done += written
  }
}

func fail(_ message: String) -> Never {
  var standardError = FileHandleStream()
  print("wal-crash-writer: \(message)", to: &standardError)
  exit(1)
}

struct FileHandleStream: TextOutputStream {
  mutating func write(_ string: String) {
    let bytes = Array(string.utf8)
    _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
  }
}

/// The writer's view of its own log, enough to write valid batches and true claims.
struct Writer {
  let storage: FileStorage
  var random: SplitMix64
  /// The log above `base`: terms[k] is the term of entry base + 1 + k.
  var base: UInt64
  var baseTerm: UInt64
  var terms: [UInt64]
  var hardState: HardState
  /// The last index announced as durable.
  var durable: UInt64
  var batchesSinceSnapshot = 0
  let configuration = Configuration(voters: [NodeID(1), NodeID(2), NodeID(3)])

  init(storage: FileStorage, recovered: RecoveredState, seed: UInt64) {
    self.storage = storage
    random = SplitMix64(seed: seed)
    base = recovered.stored.snapshot.index
    baseTerm = recovered.stored.snapshot.term
    terms = recovered.stored.entries.map(\.term)
    hardState = recovered.stored.hardState
    durable = base + UInt64(terms.count)
  }

  mutating func chance(_ percent: UInt64) -> Bool { random.next() % 100 < percent }

  mutating func pick(_ range: ClosedRange<UInt64>) -> UInt64 {
    range.lowerBound + random.next() % (range.upperBound - range.lowerBound + 1)
  }

  var lastIndex: UInt64 { base + UInt64(terms.count) }
  var currentTerm: UInt64 { max(hardState.term, terms.last ?? baseTerm, 1) }
  func term(at index: UInt64) -> UInt64 { index == base ? baseTerm : terms[Int(index - base - 1)] }

  func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [LogEntry] {
    range.map { LogEntry(index: $0, term: term, data: entryData(index: $0, term: term)) }
  }

  /// One to three batches, then one sync, then the claims the sync made true.
  mutating func round() throws(StorageError) {
    var hardStateChanged = false
    for _ in 0..<pick(1...3) {
      let roll = random.next() % 100
      let batch: PersistBatch
      if roll < 8 && lastIndex > max(base, hardState.commit) {
        batch = truncation()
        hardStateChanged = true
      } else if roll < 11 {
        hardState = HardState(
          term: currentTerm + 1, vote: chance(50) ? NodeID(pick(1...3)) : nil, commit: hardState.commit)
        batch = PersistBatch(hardState: hardState)
        hardStateChanged = true
      } else if roll < 12 {
        batch = try receivedSnapshot()
        hardStateChanged = true
      } else {
        var append = PersistBatch(
          entries: entries(lastIndex + 1...lastIndex + pick(1...20), term: currentTerm))
        terms += append.entries.map(\.term)
        if chance(40) && durable > hardState.commit {
          hardState.commit = durable
          append.hardState = hardState
        }
        batch = append
      }
      try storage.write(batch)
    }
    let position = try storage.sync()
    durable = position.index
    emit("D \(position.index) \(position.term)")
    if hardStateChanged { emit("H \(hardState.term) \(hardState.vote?.rawValue ?? 0)") }
    batchesSinceSnapshot += 1
    if batchesSinceSnapshot >= 150 && durable > base { try localSnapshot() }
  }

  /// A follower meeting a leader whose log disagrees: drop a suffix (never committed entries), take
  /// the new term.
  mutating func truncation() -> PersistBatch {
    let lowest = max(base, hardState.commit) + 1
    let from = max(lowest, lastIndex - min(lastIndex, pick(0...6)))
    if from <= durable {
      emit("D \(from - 1) \(term(at: from - 1))")
      durable = from - 1
    }
    let newTerm = currentTerm + 1
    let batch = entries(from...from + pick(0...8), term: newTerm)
    hardState = HardState(term: newTerm, vote: NodeID(pick(1...3)), commit: hardState.commit)
    terms.removeLast(Int(lastIndex + 1 - from))
    terms += batch.map(\.term)
    return PersistBatch(entries: batch, hardState: hardState)
  }

  /// A snapshot from a leader: committed through the store first, then installed (resetting the log).
  mutating func receivedSnapshot() throws(StorageError) -> PersistBatch {
    let newTerm = currentTerm + 1
    let metadata = SnapshotMetadata(
      index: lastIndex + pick(1...20), term: newTerm, configuration: configuration)
    try save(metadata)
    emit("D \(metadata.index) \(metadata.term)")
    hardState = HardState(term: newTerm, vote: nil, commit: metadata.index)
    base = metadata.index
    baseTerm = metadata.term
    terms = []
    durable = base
    return PersistBatch(snapshot: metadata, hardState: hardState)
  }

  /// A snapshot of committed entries, then compaction below the oldest retained one.
  mutating func localSnapshot() throws(StorageError) {
    batchesSinceSnapshot = 0
    let index = durable
    hardState.commit = index
    try storage.write(PersistBatch(hardState: hardState))
    try save(SnapshotMetadata(index: index, term: term(at: index), configuration: configuration))
    try storage.compact(through: index)
  }

  func save(_ metadata: SnapshotMetadata) throws(StorageError) {
    let sink = try storage.snapshots.beginWrite(metadata)
    try sink.write(snapshotData(index: metadata.index, term: metadata.term))
    try sink.commit()
    emit("S \(metadata.index) \(metadata.term)")
  }
}

let arguments = CommandLine.arguments
guard arguments.count == 3, let seed = UInt64(arguments[2]) else {
  fail("usage: wal-crash-writer <data directory> <seed>")
}
var logger = Logger(label: "wal-crash-writer")
logger.logLevel = .error
do throws(StorageError) {
  // Small segments, so that rollover, truncation across segments and compaction happen often.
  let storage = try FileStorage(
    directory: arguments[1], options: FileStorageOptions(segmentSizeBytes: 32 << 10), logger: logger)
  var writer = Writer(
    storage: storage, recovered: try storage.recover(), seed: seed ^ UInt64(getpid()) &* 0x9E37_79B9_7F4A_7C15
  )
  while true { try writer.round() }
} catch {
  fail("\(error)")
}
