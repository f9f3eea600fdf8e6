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
    var entries: [LogEntry] = []
    let opened: (wal: WriteAheadLog, warnings: [String])
    switch decision {
    case .unrecoverable(let reason):
      throw .unrecoverable(path: directory, reason: reason)
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
    shape = LogShape(floor: snapshot.position, entries: entries)
    for warning in warnings { logger.warning("\(warning)") }
    return RecoveredState(
      stored: StoredState(hardState: hardStateFile.current, snapshot: snapshot, entries: entries),
      snapshot: chosen, warnings: warnings)
  }
}
