import Raft

/// How the recovered snapshot and the recovered log are reconciled. Shared by `FileStorage` and
/// `MemoryStorage` so that both decide identically.
enum RecoveryDecision: Equatable {
  /// The log continues the snapshot: keep the entries above it.
  case keep
  /// The snapshot supersedes the log: start an empty log after it. The reason goes into the warnings.
  case resetToSnapshot(reason: String)
  case unrecoverable(reason: String)
}

enum RecoveryRules {
  /// - Parameters:
  ///   - snapshot: the snapshot recovery chose (`.empty` if none).
  ///   - isFallback: whether a newer snapshot was passed over because it was damaged.
  ///   - walFirst: the first index the log can hold (nil: no log at all).
  ///   - walLast: the index of the last entry in the log.
  ///   - termAtSnapshot: the term of the log's entry at the snapshot index, if it has one.
  static func decide(
    snapshot: SnapshotMetadata, isFallback: Bool, walFirst: UInt64?, walLast: UInt64, termAtSnapshot: UInt64?
  ) -> RecoveryDecision {
    let s = snapshot.index
    guard let walFirst else {
      if s == 0 { return .keep }
      // The log is entirely gone only when a reset was interrupted between its last unlink and the
      // creation of the new segment; with a fallback snapshot that means the entries between the
      // two snapshots are gone.
      if isFallback {
        return .unrecoverable(
          reason: "no WAL segments, and the snapshot at \(s) is a fallback (the newest was damaged)")
      }
      return .resetToSnapshot(reason: "no WAL segments; the log restarts after snapshot \(snapshot.position)")
    }
    if walFirst > s + 1 {
      let which = isFallback ? "the fallback snapshot (the newest was damaged)" : "the snapshot"
      return .unrecoverable(
        reason:
          "the WAL starts at entry \(walFirst) but \(which) ends at \(s): entries \(s + 1)...\(walFirst - 1) are missing"
      )
    }
    if walLast < s {
      return .resetToSnapshot(
        reason: "the log ends at \(walLast), before snapshot \(snapshot.position), which supersedes it")
    }
    if s > 0, let term = termAtSnapshot, term != snapshot.term {
      return .resetToSnapshot(
        reason:
          "the log has term \(term) at \(s) but snapshot \(snapshot.position) has term \(snapshot.term); the snapshot wins"
      )
    }
    return .keep
  }
}

extension RecoveryRules {
  /// The hard state's commit index must lie within what the log and snapshot hold.
  ///
  /// `FileStorage` never writes a commit index above the entries already made durable (see
  /// `FileStorage.writeHardState`), so no crash or power loss can leave one beyond the recovered
  /// log: when it is, acknowledged entries were lost after they were written (a WAL truncated or
  /// removed by hand, a file system that lost synced data). Returns the reason to refuse, or nil.
  static func commitProblem(commit: UInt64, lastHeld: UInt64, snapshot: SnapshotMetadata) -> String? {
    guard commit > lastHeld else { return nil }
    let missing = lastHeld + 1 == commit ? "entry \(commit) is" : "entries \(lastHeld + 1)...\(commit) are"
    return "the hard state's commit index is \(commit) but the log and snapshot (at \(snapshot.index)) "
      + "end at \(lastHeld): \(missing) committed but missing"
  }
}
