import Raft

/// What the append rules need to know about the stored log: where it ends and the term of each
/// entry, kept as runs of equal terms (terms change rarely, so this stays tiny).
///
/// Both `FileStorage` and `MemoryStorage` check every batch against it before touching anything, so
/// they accept and refuse exactly the same batches, and a refused batch changes nothing.
struct LogShape: Equatable {
  struct Run: Equatable {
    var firstIndex: UInt64
    var term: UInt64
  }

  /// Entries at or below `floor.index` are covered by a snapshot or compacted away and can never be
  /// rewritten (Raft never truncates committed entries, and a snapshot only covers committed ones).
  private(set) var floor: LogPosition
  private(set) var lastIndex: UInt64
  /// Runs of equal terms among the entries above `floor`.
  private var runs: [Run] = []

  init(floor: LogPosition) {
    self.floor = floor
    lastIndex = floor.index
  }

  init(floor: LogPosition, entries: [LogEntry]) {
    self.init(floor: floor)
    append(entries)
  }

  var lastTerm: UInt64 { runs.last?.term ?? floor.term }

  var lastPosition: LogPosition { LogPosition(index: lastIndex, term: lastTerm) }

  func term(at index: UInt64) -> UInt64? {
    if index == floor.index { return floor.term }
    guard index > floor.index, index <= lastIndex else { return nil }
    var low = 0
    var high = runs.count - 1
    while low < high {
      let middle = (low + high + 1) / 2
      if runs[middle].firstIndex <= index { low = middle } else { high = middle - 1 }
    }
    return runs[low].term
  }

  /// Checks a batch against the log; returns the index from which it replaces a stored suffix.
  func check(_ entries: [LogEntry], maxRecordBytes: Int) throws(StorageError) -> UInt64? {
    guard let first = entries.first else { return nil }
    guard first.index > floor.index else {
      throw .misuse("entry \(first.index) is at or below \(floor.index), covered by a snapshot or compacted")
    }
    guard first.index <= lastIndex + 1 else {
      throw .misuse("gap: entry \(first.index) appended after last index \(lastIndex)")
    }
    let previousTerm = term(at: first.index - 1)!
    guard first.term >= previousTerm else {
      throw .misuse(
        "entry \(first.index) has term \(first.term), below the previous entry's term \(previousTerm)")
    }
    var previous = first
    for (k, entry) in entries.enumerated() {
      if k > 0 {
        guard entry.index == previous.index + 1 else {
          throw .misuse("batch is not contiguous: entry \(entry.index) follows \(previous.index)")
        }
        guard entry.term >= previous.term else {
          throw .misuse("term decreases from \(previous.term) to \(entry.term) at entry \(entry.index)")
        }
      }
      let size = WALFormat.payloadPrefixSize + entry.data.count
      guard size <= maxRecordBytes else {
        throw .misuse(
          "entry \(entry.index) needs a \(size)-byte record, above maxRecordBytes \(maxRecordBytes)")
      }
      previous = entry
    }
    return first.index <= lastIndex ? first.index : nil
  }

  /// Checks a whole batch: its entries against the log as it will be after the batch's snapshot (if
  /// any) is installed.
  func checking(_ batch: PersistBatch, maxRecordBytes: Int) throws(StorageError) -> UInt64? {
    if let snapshot = batch.snapshot {
      return try LogShape(floor: snapshot.position).check(batch.entries, maxRecordBytes: maxRecordBytes)
    }
    return try check(batch.entries, maxRecordBytes: maxRecordBytes)
  }

  mutating func truncate(from index: UInt64) {
    guard index <= lastIndex else { return }
    precondition(index > floor.index)
    lastIndex = index - 1
    while let last = runs.last, last.firstIndex > lastIndex { runs.removeLast() }
  }

  /// Appends entries that continue the log (checked by `check`).
  mutating func append(_ entries: [LogEntry]) {
    for entry in entries {
      precondition(entry.index == lastIndex + 1)
      if entry.term != lastTerm || runs.isEmpty {
        runs.append(Run(firstIndex: entry.index, term: entry.term))
      }
      lastIndex = entry.index
    }
  }

  mutating func reset(to snapshot: LogPosition) {
    self = LogShape(floor: snapshot)
  }

  /// Compaction: entries through `index` can no longer be rewritten.
  mutating func raiseFloor(to index: UInt64) {
    guard index > floor.index, index <= lastIndex, let term = term(at: index) else { return }
    floor = LogPosition(index: index, term: term)
    while runs.count > 1 && runs[1].firstIndex <= index + 1 { runs.removeFirst() }
    if let first = runs.first, first.firstIndex <= index {
      if index == lastIndex { runs.removeAll() } else { runs[0].firstIndex = index + 1 }
    }
  }
}
