import Raft
@_spi(Testing) import RaftStorage

/// One step of a storage workload, as a Raft node would issue it.
enum WorkloadStep: CustomStringConvertible {
  case write(PersistBatch)
  case sync
  /// A snapshot written and committed through the store (taken locally, or received from a leader
  /// and then installed by a following `.write` carrying it).
  case saveSnapshot(SnapshotMetadata)
  case compact(UInt64)

  var description: String {
    switch self {
    case .write(let batch):
      var parts: [String] = []
      if let snapshot = batch.snapshot { parts.append("install \(snapshot.position)") }
      if let first = batch.entries.first, let last = batch.entries.last {
        parts.append("entries \(first.position)...\(last.position)")
      }
      if let hardState = batch.hardState { parts.append("hard state \(hardState)") }
      return "write(" + parts.joined(separator: ", ") + ")"
    case .sync: return "sync"
    case .saveSnapshot(let metadata): return "save \(metadata.position)"
    case .compact(let index): return "compact(\(index))"
    }
  }
}

/// Entry content that is a function of index and term alone (size included), so an entry found on
/// disk can be verified without knowing what was written.
enum Verifiable {
  static func entry(_ index: UInt64, term: UInt64) -> LogEntry {
    let size = Int((index &* 2_654_435_761 ^ term &* 40_503) % 300)
    return Entries.entry(index, term: term, size: size)
  }

  static func isIntact(_ entry: LogEntry) -> Bool { entry == Self.entry(entry.index, term: entry.term) }

  static func snapshotData(_ metadata: SnapshotMetadata) -> [UInt8] {
    Entries.data(index: metadata.index, term: metadata.term, size: Int(metadata.index % 700))
  }
}

/// Generates a seeded, valid sequence of storage calls and tracks what each call promised: after
/// any failure, the durable promises are what a reopened store must still hold.
struct Workload {
  private var random: SplitMix64
  let retention: Int
  /// The log above `floor`, as written.
  private(set) var log: [LogEntry] = []
  private(set) var floor = LogPosition.zero
  private(set) var hardState = HardState.initial
  private(set) var snapshots: [SnapshotMetadata] = []

  // What successful syncs (and commits) promised.
  private(set) var acknowledged: [LogEntry] = []
  private(set) var acknowledgedHardState = HardState.initial
  private(set) var newestSnapshot: SnapshotMetadata?
  /// The lowest index a write since the last sync replaced (truncation or reset): acknowledged
  /// entries from there on may legitimately be gone.
  private(set) var replacedFrom = UInt64.max

  init(seed: UInt64, retention: Int = 2) {
    random = SplitMix64(seed: seed)
    self.retention = retention
  }

  var lastIndex: UInt64 { log.last?.index ?? floor.index }
  var lastTerm: UInt64 { log.last?.term ?? floor.term }

  private mutating func chance(_ percent: UInt64) -> Bool { random.next() % 100 < percent }

  private mutating func pick(_ range: ClosedRange<UInt64>) -> UInt64 {
    range.lowerBound + random.next() % (range.upperBound - range.lowerBound + 1)
  }

  private func term(at index: UInt64) -> UInt64? {
    if index == floor.index { return floor.term }
    guard index > floor.index, index <= lastIndex else { return nil }
    return log[Int(index - floor.index - 1)].term
  }

  /// The next step. A received snapshot comes as two steps: `.saveSnapshot`, then the install.
  mutating func next() -> [WorkloadStep] {
    let roll = random.next() % 100
    let current = max(hardState.term, lastTerm, 1)
    switch roll {
    case 0..<45:
      let count = pick(1...6)
      let entries = (lastIndex + 1...lastIndex + count).map { Verifiable.entry($0, term: current) }
      var batch = PersistBatch(entries: entries)
      if chance(20) {
        batch.hardState = HardState(
          term: current, vote: hardState.vote, commit: min(lastIndex, hardState.commit + 3))
      }
      return [.write(batch)]
    case 45..<55:
      let lowest = max(floor.index, hardState.commit) + 1
      guard lastIndex >= lowest else { return [.sync] }
      // Mostly a short conflicting tail; sometimes one reaching back across segments.
      let depth = chance(70) ? pick(0...3) : pick(0...60)
      let from = max(lowest, lastIndex - min(lastIndex, depth))
      let newTerm = current + 1
      let entries = (from...from + pick(0...3)).map { Verifiable.entry($0, term: newTerm) }
      return [
        .write(
          PersistBatch(
            entries: entries,
            hardState: HardState(term: newTerm, vote: NodeID(pick(1...3)), commit: hardState.commit)))
      ]
    case 55..<62:
      let vote = chance(50) ? NodeID(pick(1...5)) : nil
      return [
        .write(PersistBatch(hardState: HardState(term: current + 1, vote: vote, commit: hardState.commit)))
      ]
    case 62..<85:
      return [.sync]
    case 85..<93:
      // A local snapshot of applied (so committed and durable) entries.
      let index = min(acknowledged.last?.index ?? 0, hardState.commit)
      guard index > floor.index, let snapshotTerm = term(at: index),
        acknowledged.contains(where: { $0.index == index && $0.term == snapshotTerm }),
        !snapshots.contains(where: { $0.index >= index })
      else { return [.sync] }
      let metadata = SnapshotMetadata(index: index, term: snapshotTerm, configuration: testConfiguration)
      return [.saveSnapshot(metadata), .compact(index)]
    default:
      let metadata = SnapshotMetadata(
        index: lastIndex + pick(1...5), term: current + 1, configuration: testConfiguration)
      return [
        .saveSnapshot(metadata),
        .write(
          PersistBatch(
            snapshot: metadata, hardState: HardState(term: current + 1, vote: nil, commit: metadata.index))),
      ]
    }
  }

  /// Records that `step` succeeded.
  mutating func succeeded(_ step: WorkloadStep) {
    switch step {
    case .write(let batch):
      noteAttempt(step)
      if let snapshot = batch.snapshot {
        log = []
        floor = snapshot.position
      }
      if let first = batch.entries.first {
        log.removeLast(Int(lastIndex + 1 - first.index))
        log += batch.entries
      }
      if let state = batch.hardState { hardState = state }
    case .sync:
      acknowledged = log
      if hardState.term != acknowledgedHardState.term || hardState.vote != acknowledgedHardState.vote {
        acknowledgedHardState = hardState
      }
      replacedFrom = .max
    case .saveSnapshot(let metadata):
      snapshots.append(metadata)
      snapshots.sort { $0.index < $1.index }
      if snapshots.count > retention { snapshots.removeFirst(snapshots.count - retention) }
      if newestSnapshot == nil || metadata.index >= newestSnapshot!.index { newestSnapshot = metadata }
    case .compact(let index):
      guard let oldest = snapshots.first?.index else { return }
      let bound = min(index, oldest, lastIndex)
      guard bound > floor.index, let term = term(at: bound) else { return }
      log.removeFirst(Int(bound - floor.index))
      floor = LogPosition(index: bound, term: term)
    }
  }

  /// Records that `step` was attempted (it may have partly taken effect before failing).
  mutating func noteAttempt(_ step: WorkloadStep) {
    guard case .write(let batch) = step else { return }
    if let snapshot = batch.snapshot { replacedFrom = min(replacedFrom, snapshot.index + 1) }
    if let first = batch.entries.first, first.index <= lastIndex {
      replacedFrom = min(replacedFrom, first.index)
    }
  }

  /// After a restart, the node treats everything recovered as durable: it becomes the promise.
  mutating func adopt(_ recovered: RecoveredState) {
    acknowledged = recovered.stored.entries
    acknowledgedHardState = recovered.stored.hardState
    replacedFrom = .max
  }

  /// Applies a step to a storage.
  static func perform(_ step: WorkloadStep, on storage: any RaftStorage) throws(StorageError) {
    switch step {
    case .write(let batch): try storage.write(batch)
    case .sync: try storage.sync()
    case .compact(let index): try storage.compact(through: index)
    case .saveSnapshot(let metadata):
      let sink = try storage.snapshots.beginWrite(metadata)
      do {
        try sink.write(Verifiable.snapshotData(metadata))
        try sink.commit()
      } catch {
        sink.abort()
        throw error
      }
    }
  }

  /// Checks a recovered state against the promises made; returns what is wrong.
  func violations(in recovered: RecoveredState) -> [String] {
    var problems: [String] = []
    let entries = recovered.stored.entries
    let snapshot = recovered.stored.snapshot
    if let newestSnapshot, snapshot.index < newestSnapshot.index {
      problems.append("snapshot \(snapshot.position) is older than the committed \(newestSnapshot.position)")
    }
    if !Entries.isValidLog(entries) { problems.append("recovered log is not a valid Raft log") }
    if let first = entries.first, first.index != snapshot.index + 1 {
      problems.append("recovered log starts at \(first.index), snapshot at \(snapshot.index)")
    }
    if let damaged = entries.first(where: { !Verifiable.isIntact($0) }) {
      problems.append("entry \(damaged.position) has the wrong content")
    }
    let byIndex = Dictionary(uniqueKeysWithValues: entries.map { ($0.index, $0) })
    for entry in acknowledged where entry.index > snapshot.index && entry.index < replacedFrom {
      if byIndex[entry.index] != entry {
        problems.append(
          "acknowledged entry \(entry.position) lost (found \(byIndex[entry.index].map { "\($0.position)" } ?? "nothing"))"
        )
        break
      }
    }
    let hard = recovered.stored.hardState
    if hard.term < acknowledgedHardState.term
      || (hard.term == acknowledgedHardState.term && hard.vote != acknowledgedHardState.vote)
    {
      problems.append("hard state \(hard) forgets the acknowledged \(acknowledgedHardState)")
    }
    return problems
  }
}
