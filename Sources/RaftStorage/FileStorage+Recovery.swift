import Logging
import Raft

extension FileStorage {
  /// Reads back what is durable and makes it the starting point (rules: docs/STORAGE.md).
  ///
  /// Everything returned is synced before it is returned: after a process crash it may exist only
  /// in the page cache, and the node will treat it as durable (acknowledge it, count it for a vote).
  public func recover() throws(StorageError) -> RecoveredState {
    guard wal == nil else { throw .misuse("recover() may be called only once, right after opening") }
    var warnings: [String] = []

    let (hardStateFile, hardStateWarning) = try HardStateFile.open(path: layout.hardState, fileSystem: fs)
    if let hardStateWarning { warnings.append(hardStateWarning) }

    let (candidates, snapshotWarnings) = try store.scan()
    warnings += snapshotWarnings
    var chosen: SnapshotMetadata?
    var damaged: [FileSnapshotStore.Stored] = []
    for candidate in candidates {
      do {
        chosen = try store.verify(candidate)
        break
      } catch {
        guard case .corruption(let file, let offset, let reason) = error else { throw error }
        damaged.append(candidate)
        warnings.append("snapshot \(file) is damaged at offset \(offset) (\(reason)); passing over it")
      }
    }
    let snapshot = chosen ?? .empty

    let scan = try WriteAheadLog.scan(
      directory: layout.wal, fileSystem: fs, options: options, keepAbove: snapshot.index)
    let decision = RecoveryRules.decide(
      snapshot: snapshot, isFallback: !damaged.isEmpty, walFirst: scan.firstIndex,
      walLast: scan.lastIndex ?? 0,
      termAtSnapshot: scan.termAtSnapshot)
    // Both refusals come before anything is changed (a torn tail cut, a log reset).
    let lastHeld: UInt64
    switch decision {
    case .unrecoverable(let reason):
      let files = [
        chosen.map { "snapshot \(layout.snapshot(index: $0.index, term: $0.term))" },
        scan.segments.first.map { "first WAL segment \($0.path)" },
      ].compactMap { $0 }
      throw .unrecoverable(
        path: directory, reason: reason + (files.isEmpty ? "" : " (\(files.joined(separator: ", ")))"))
    case .resetToSnapshot: lastHeld = snapshot.index
    case .keep: lastHeld = scan.entries.last?.index ?? snapshot.index
    }
    try checkCommit(hardStateFile, lastHeld: lastHeld, snapshot: chosen, scan: scan)
    var entries: [LogEntry] = []
    let opened: (wal: WriteAheadLog, warnings: [String])
    switch decision {
    case .unrecoverable: preconditionFailure("refused above")
    case .resetToSnapshot(let reason):
      warnings.append(reason)
      opened = try WriteAheadLog.replace(
        scan, after: snapshot.index, directory: layout.wal, fileSystem: fs, options: options)
    case .keep where scan.segments.isEmpty:
      opened = try WriteAheadLog.replace(
        scan, after: 0, directory: layout.wal, fileSystem: fs, options: options)
    case .keep:
      if let first = scan.entries.first, first.term < snapshot.term {
        let segment = scan.segments.last { $0.firstIndex <= first.index }!
        throw .corruption(
          file: segment.path, offset: segment.offsets?[Int(first.index - segment.firstIndex)] ?? 0,
          reason:
            "entry \(first.index) has term \(first.term), below the term \(snapshot.term) of snapshot \(snapshot.position)"
        )
      }
      opened = try WriteAheadLog.open(scan, directory: layout.wal, fileSystem: fs, options: options)
      entries = scan.entries
    }
    warnings += opened.warnings

    let valid = candidates.filter { !damaged.contains($0) }
    warnings += try store.adopt(valid: valid, newest: chosen, quarantine: damaged)
    try fs.syncDirectory(layout.root)

    wal = opened.wal
    self.hardStateFile = hardStateFile
    durableIndex = lastHeld
    shape = LogShape(floor: snapshot.position, entries: entries)
    for warning in warnings { logger.warning("\(warning)") }
    return RecoveredState(
      stored: StoredState(hardState: hardStateFile.current, snapshot: snapshot, entries: entries),
      snapshot: chosen, warnings: warnings)
  }

  /// Refuses a hard state whose commit index lies beyond the recovered log (`RecoveryRules.commitProblem`).
  private func checkCommit(
    _ hardStateFile: HardStateFile, lastHeld: UInt64, snapshot: SnapshotMetadata?, scan: WALScan
  ) throws(StorageError) {
    guard
      let problem = RecoveryRules.commitProblem(
        commit: hardStateFile.current.commit, lastHeld: lastHeld, snapshot: snapshot ?? .empty)
    else { return }
    let files = [
      scan.segments.last.map { "newest WAL segment \($0.path)" } ?? "no WAL segment in \(layout.wal)",
      snapshot.map { "snapshot \(layout.snapshot(index: $0.index, term: $0.term))" },
    ].compactMap { $0 }
    throw .unrecoverable(
      path: hardStateFile.path,
      reason: problem
        + " (\(files.joined(separator: ", "))). The log was truncated or removed outside raftdb, "
        + "or the disk lost synced data; nothing was changed. Move the data directory aside (keep it for "
        + "diagnosis) and add the node back to the cluster with an empty directory, so that it receives the "
        + "log from the leader; a single-node cluster must be restored from a backup (or its WAL put back)")
  }
}
