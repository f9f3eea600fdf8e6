import Logging
import Raft

/// A node's durable state in a data directory (layout in `DataLayout`, rules in docs/STORAGE.md).
///
/// Opening checks or creates the directory and locks it; `recover()` must be called next, once.
/// After any failed write or sync the store refuses further writes (`StorageError.failed`): the
/// state of unsynced data is then unknown, and only a reopen can establish what is on disk.
/// Not thread-safe: one owner drives it, as `RaftStorage` requires.
public final class FileStorage: RaftStorage {
  public let directory: String
  public let options: FileStorageOptions
  let layout: DataLayout
  let fs: any StorageFileSystem
  let logger: Logger
  let failure = FailureState()
  let store: FileSnapshotStore
  private var lockFile: (any StorageFile)?
  var wal: WriteAheadLog?
  var hardStateFile: HardStateFile?
  var shape = LogShape(floor: .zero)
  /// The highest index that the disk holds (in the WAL or a snapshot) even after a power loss:
  /// everything recovery read, raised to the last entry by each WAL fsync, lowered by a truncation.
  var durableIndex: UInt64 = 0
  /// The hard state the core asked for, when the one written had its commit held back to
  /// `durableIndex`; `sync` writes it once the WAL fsync has made its entries durable.
  var heldBackHardState: HardState?

  public init(
    directory: String, options: FileStorageOptions = FileStorageOptions(),
    fileSystem: any StorageFileSystem = POSIXFileSystem(),
    logger: Logger = Logger(label: "raftdb.storage")
  ) throws(StorageError) {
    try options.validate()
    self.directory = directory
    self.options = options
    layout = DataLayout(root: directory)
    fs = fileSystem
    self.logger = logger
    store = FileSnapshotStore(
      layout: layout, fileSystem: fileSystem, retention: options.snapshotsRetained, failure: failure,
      logger: logger)
    lockFile = try DataFormat.open(layout, fileSystem: fileSystem, logger: logger)
  }

  deinit { close() }

  public var snapshots: any SnapshotStore { store }

  /// The snapshot store with its concrete type, for tests and tools.
  public var snapshotStore: FileSnapshotStore { store }

  /// The WAL's segments, oldest first (for tests and tools that inspect the files).
  @_spi(Testing) public var walSegments: [WALSegment] { wal?.segments ?? [] }

  /// Why the store stopped accepting writes, if it did.
  public var failureCause: String? { failure.cause }

  public func write(_ batch: PersistBatch) throws(StorageError) {
    let (wal, hardStateFile) = try opened()
    try failure.guarding { () throws(StorageError) in
      // Every check happens before the first byte is written, so a refused batch changes nothing.
      if let snapshot = batch.snapshot,
        !store.stored.contains(.init(index: snapshot.index, term: snapshot.term))
      {
        throw .misuse("installing \(snapshot), which was not committed through the snapshot store")
      }
      let truncateFrom = try shape.checking(batch, maxRecordBytes: options.maxRecordBytes)
      if let snapshot = batch.snapshot {
        try wal.reset(after: snapshot.index)
        shape.reset(to: snapshot.position)
        // The snapshot file was synced when the store committed it.
        durableIndex = snapshot.index
      }
      if !batch.entries.isEmpty {
        if let index = truncateFrom {
          try wal.truncate(from: index)
          shape.truncate(from: index)
          durableIndex = min(durableIndex, index - 1)
        }
        try wal.append(batch.entries)
        shape.append(batch.entries)
      }
      if let hardState = batch.hardState { try writeHardState(hardState, to: hardStateFile) }
    }
  }

  @discardableResult
  public func sync() throws(StorageError) -> LogPosition {
    let (wal, hardStateFile) = try opened()
    return try failure.guarding { () throws(StorageError) -> LogPosition in
      try wal.sync()
      durableIndex = shape.lastIndex
      if let heldBack = heldBackHardState { try writeHardState(heldBack, to: hardStateFile) }
      try hardStateFile.syncIfNeeded()
      return shape.lastPosition
    }
  }

  public func compact(through index: UInt64) throws(StorageError) {
    let (wal, _) = try opened()
    try failure.guarding { () throws(StorageError) in
      guard let oldest = store.oldestRetainedIndex else { return }
      let bound = min(index, oldest, shape.lastIndex)
      guard bound > shape.floor.index else { return }
      try wal.compact(through: bound)
      shape.raiseFloor(to: bound)
    }
  }

  /// Writes `state` with its commit index held back to `durableIndex`.
  ///
  /// A slot written without an fsync (a commit-only change, or any write before the WAL's fsync) can
  /// reach the disk before the WAL records written ahead of it: writeback order is arbitrary. If it
  /// named a commit index above what the WAL then held, recovery could not tell that legitimate
  /// power loss from a log that lost acknowledged entries (which it refuses). Holding the commit
  /// back makes "commit ≤ the last index the log and snapshot hold" true on disk at every instant:
  /// the entries a written commit index covers were made durable by an earlier WAL fsync (`sync`,
  /// `wal.sync()`), a truncation's fsync, or the store's snapshot commit. The commit index is only a
  /// hint, so holding it back costs a restarted node nothing but re-learning it.
  private func writeHardState(_ state: HardState, to file: HardStateFile) throws(StorageError) {
    var written = state
    written.commit = min(state.commit, durableIndex)
    try file.write(written)
    heldBackHardState = written == state ? nil : state
  }

  /// Closes every file and releases the directory lock. The object is unusable afterwards.
  public func close() {
    wal?.close()
    wal = nil
    hardStateFile = nil
    lockFile?.close()
    lockFile = nil
  }

  private func opened() throws(StorageError) -> (WriteAheadLog, HardStateFile) {
    guard let wal, let hardStateFile else {
      throw .misuse(lockFile == nil ? "the storage is closed" : "recover() must be called before writing")
    }
    return (wal, hardStateFile)
  }
}
