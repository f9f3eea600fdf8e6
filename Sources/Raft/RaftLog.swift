/// This node's log as the core sees it: the entries above the last compaction point, held in memory,
/// with cursors saying how far they are committed, handed out for persistence, durable, and handed
/// out for applying.
///
/// Invariants (checked by `checkInvariants()`):
/// `offset ≤ snapshot.index ≤ committed ≤ lastIndex`, `applied ≤ committed`,
/// `persisted < unpersistedFrom ≤ lastIndex + 1`, and `entries[k].index == offset + 1 + k`.
struct RaftLog {
  /// Contiguous entries; `entries[k].index == offset + 1 + k`.
  private(set) var entries: [LogEntry]
  /// The index just before `entries[0]`, and its term.
  private(set) var offset: UInt64
  private(set) var offsetTerm: UInt64
  /// The newest snapshot this node has (taken locally or received); the log may retain entries
  /// below it.
  private(set) var snapshot: SnapshotMetadata
  private(set) var committed: UInt64
  /// The highest index handed to the application to apply.
  private(set) var applied: UInt64
  /// The highest index known to be durable on this node.
  private(set) var persisted: UInt64
  /// The first index not yet handed out for persistence.
  private(set) var unpersistedFrom: UInt64
  /// A received snapshot that has not yet been handed out for installation.
  private(set) var snapshotToInstall: SnapshotMetadata?
  private(set) var configurations: ConfigurationHistory

  /// Restores the log from what stable storage holds. Everything passed in is durable already.
  init(snapshot: SnapshotMetadata, entries storedEntries: [LogEntry], commit: UInt64) {
    var entries = storedEntries
    if let first = entries.first {
      precondition(
        first.index <= snapshot.index + 1, "gap between snapshot \(snapshot.index) and log at \(first.index)")
      for k in entries.indices.dropFirst() {
        precondition(
          entries[k].index == entries[k - 1].index + 1, "stored log is not contiguous at \(entries[k].index)")
      }
      if let atSnapshot = entries.first(where: { $0.index == snapshot.index }),
        atSnapshot.term != snapshot.term
      {
        entries = []  // The snapshot supersedes a log that disagrees with it.
      } else {
        entries.removeAll { $0.index <= snapshot.index }
      }
    }
    self.entries = entries
    offset = snapshot.index
    offsetTerm = snapshot.term
    self.snapshot = snapshot
    let lastIndex = snapshot.index + UInt64(entries.count)
    committed = min(max(commit, snapshot.index), lastIndex)
    applied = snapshot.index
    persisted = lastIndex
    unpersistedFrom = lastIndex + 1
    configurations = ConfigurationHistory(base: snapshot.configuration, baseIndex: snapshot.index)
    for entry in entries where entry.kind == .configuration {
      configurations.record(Self.decodeConfiguration(entry), at: entry.index)
    }
    checkInvariants()
  }

  var firstIndex: UInt64 { offset + 1 }

  var lastIndex: UInt64 { offset + UInt64(entries.count) }

  var lastTerm: UInt64 { entries.last?.term ?? offsetTerm }

  var lastPosition: LogPosition { LogPosition(index: lastIndex, term: lastTerm) }

  /// The term of the entry at `index`, or nil when it is compacted away or beyond the end.
  func term(at index: UInt64) -> UInt64? {
    if index == offset { return offsetTerm }
    guard index > offset, index <= lastIndex else { return nil }
    return entries[Int(index - offset - 1)].term
  }

  func entry(at index: UInt64) -> LogEntry? {
    guard index > offset, index <= lastIndex else { return nil }
    return entries[Int(index - offset - 1)]
  }

  func matches(index: UInt64, term: UInt64) -> Bool { self.term(at: index) == term }

  /// The election restriction (Raft §5.4.1): a log ending at `position` is at least as up to date as
  /// this one if its last term is higher, or equal with an index at least as high.
  func isUpToDate(_ position: LogPosition) -> Bool { position >= lastPosition }

  /// Appends an entry created by this node as leader.
  mutating func appendAsLeader(_ entry: LogEntry) {
    precondition(
      entry.index == lastIndex + 1 && entry.term >= lastTerm, "leader append out of order: \(entry.position)")
    entries.append(entry)
    if entry.kind == .configuration {
      configurations.record(Self.decodeConfiguration(entry), at: entry.index)
    }
  }

  struct AppendOutcome {
    /// The index of the last entry now known to match the leader's log.
    var lastNewIndex: UInt64
    /// Set when a conflicting suffix from this index on was dropped.
    var truncatedFrom: UInt64?
    /// Whether the newest configuration moved (appended, or rolled back by the truncation).
    var configurationChanged = false
  }

  /// The follower side of AppendEntries: if the log matches at `prevIndex`/`prevTerm`, appends
  /// `newEntries`, first truncating any conflicting suffix (never a committed one). Returns nil when
  /// the consistency check fails.
  mutating func tryAppend(prevIndex: UInt64, prevTerm: UInt64, entries newEntries: [LogEntry])
    -> AppendOutcome?
  {
    guard matches(index: prevIndex, term: prevTerm) else { return nil }
    var outcome = AppendOutcome(lastNewIndex: prevIndex + UInt64(newEntries.count))
    // The first new entry that this log lacks or holds with another term.
    var firstNew = newEntries.count
    for (k, entry) in newEntries.enumerated() {
      precondition(entry.index == prevIndex + 1 + UInt64(k), "append entries not contiguous")
      if term(at: entry.index) != entry.term {
        firstNew = k
        break
      }
    }
    guard firstNew < newEntries.count else { return outcome }
    let from = newEntries[firstNew].index
    if from <= lastIndex {
      precondition(
        from > committed, "conflict at \(from) would truncate committed entries (commit \(committed))")
      truncate(from: from, configurationChanged: &outcome.configurationChanged)
      outcome.truncatedFrom = from
    }
    for entry in newEntries[firstNew...] {
      entries.append(entry)
      if entry.kind == .configuration {
        configurations.record(Self.decodeConfiguration(entry), at: entry.index)
        outcome.configurationChanged = true
      }
    }
    return outcome
  }

  private mutating func truncate(from index: UInt64, configurationChanged: inout Bool) {
    entries.removeLast(Int(lastIndex - index + 1))
    unpersistedFrom = min(unpersistedFrom, index)
    persisted = min(persisted, index - 1)
    if configurations.truncate(from: index) { configurationChanged = true }
  }

  /// The fast back-off hint (etcd's findConflictByTerm): the last index at or below `index` whose
  /// term is at most `term`, and that term. A leader probing with this hint skips every entry that
  /// cannot match in one round trip.
  func conflictHint(atOrBelow index: UInt64, maxTerm: UInt64) -> (index: UInt64, term: UInt64) {
    var candidate = min(index, lastIndex)
    while candidate > offset, let t = term(at: candidate), t > maxTerm {
      candidate -= 1
    }
    return (candidate, term(at: candidate) ?? 0)
  }

  mutating func commit(to index: UInt64) {
    guard index > committed else { return }
    precondition(index <= lastIndex, "commit \(index) beyond last index \(lastIndex)")
    committed = index
  }

  /// Entries from `index` on, for an append message: at least one entry when there is any, and
  /// otherwise no more than `maxBytes` of them.
  func entries(from index: UInt64, maxBytes: Int) -> [LogEntry] {
    guard index <= lastIndex else { return [] }
    precondition(index > offset, "entries from \(index) are compacted (offset \(offset))")
    let start = Int(index - offset - 1)
    var end = start
    var bytes = 0
    while end < entries.count {
      let size = entries[end].sizeInBytes
      if end > start && bytes + size > maxBytes { break }
      bytes += size
      end += 1
    }
    return Array(entries[start..<end])
  }

  /// Hands out the entries not yet given to the application for persistence.
  mutating func takeUnpersisted() -> [LogEntry] {
    guard unpersistedFrom <= lastIndex else { return [] }
    let taken = Array(entries[Int(unpersistedFrom - offset - 1)...])
    unpersistedFrom = lastIndex + 1
    return taken
  }

  mutating func takeSnapshotToInstall() -> SnapshotMetadata? {
    defer { snapshotToInstall = nil }
    return snapshotToInstall
  }

  /// Records that everything through `position` is durable. Ignored when the log has since changed
  /// at that index (a stale acknowledgement from before a truncation).
  mutating func markPersisted(through position: LogPosition) {
    guard position.index > persisted, position.index < unpersistedFrom, snapshotToInstall == nil,
      matches(index: position.index, term: position.term)
    else { return }
    persisted = position.index
  }

  /// Hands out committed, locally durable entries not yet given out for applying.
  mutating func takeCommittedToApply(maxBytes: Int) -> [LogEntry] {
    let upTo = min(committed, persisted)
    guard upTo > applied else { return [] }
    precondition(applied >= offset, "applied \(applied) below offset \(offset)")
    var result: [LogEntry] = []
    var bytes = 0
    var index = applied + 1
    while index <= upTo {
      let entry = entries[Int(index - offset - 1)]
      if !result.isEmpty && bytes + entry.sizeInBytes > maxBytes { break }
      bytes += entry.sizeInBytes
      result.append(entry)
      index += 1
    }
    applied = index - 1
    return result
  }

  /// Replaces the whole log with a snapshot received from the leader.
  mutating func restore(_ newSnapshot: SnapshotMetadata) {
    precondition(
      newSnapshot.index > committed, "restoring snapshot \(newSnapshot.index) at or below commit \(committed)"
    )
    entries = []
    offset = newSnapshot.index
    offsetTerm = newSnapshot.term
    snapshot = newSnapshot
    committed = newSnapshot.index
    applied = newSnapshot.index
    // Nothing of the new log is durable until the snapshot itself is.
    persisted = 0
    unpersistedFrom = newSnapshot.index + 1
    snapshotToInstall = newSnapshot
    configurations = ConfigurationHistory(base: newSnapshot.configuration, baseIndex: newSnapshot.index)
  }

  /// Metadata describing a snapshot of the state machine taken at `index`.
  func snapshotMetadata(at index: UInt64) -> SnapshotMetadata? {
    guard index >= snapshot.index, let term = term(at: index) else { return nil }
    return SnapshotMetadata(index: index, term: term, configuration: configurations.configuration(at: index))
  }

  /// Records that the application durably stored a snapshot at `index` and drops entries below it,
  /// keeping up to `retain` entries, and up to `retainBytes` of their payloads, for followers that
  /// are only slightly behind.
  /// Returns false, changing nothing, when `index` is not above the current snapshot or not yet
  /// applied and durable (a background snapshot overtaken by one received from the leader).
  @discardableResult
  mutating func compact(through index: UInt64, retain: UInt64, retainBytes: Int = .max) -> Bool {
    guard index > snapshot.index, index <= applied, index <= persisted,
      let metadata = snapshotMetadata(at: index)
    else { return false }
    snapshot = metadata
    configurations.compact(through: index)
    var newOffset = index > retain ? index - retain : 0
    // Walk down from the snapshot point while the retained payloads fit in `retainBytes`.
    var keptFrom = index
    var keptBytes = 0
    while keptFrom > max(newOffset, offset) {
      keptBytes += entry(at: keptFrom)!.data.count
      if keptBytes > retainBytes { break }
      keptFrom -= 1
    }
    newOffset = max(newOffset, keptFrom)
    guard newOffset > offset else { return true }
    offsetTerm = term(at: newOffset)!
    entries.removeFirst(Int(newOffset - offset))
    offset = newOffset
    return true
  }

  func checkInvariants() {
    precondition(offset <= snapshot.index && snapshot.index <= committed && committed <= lastIndex)
    precondition(applied <= committed && persisted < unpersistedFrom && unpersistedFrom <= lastIndex + 1)
    precondition(entries.first.map { $0.index == offset + 1 } ?? true)
  }

  static func decodeConfiguration(_ entry: LogEntry) -> Configuration {
    do {
      return try Configuration(decoding: entry.data)
    } catch {
      // Configuration entries are written by leaders and checksummed by storage and transport, so
      // an undecodable one means a bug or undetected corruption: stop rather than guess membership.
      preconditionFailure("undecodable configuration entry at \(entry.position): \(error)")
    }
  }
}
