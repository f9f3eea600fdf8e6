import Raft

/// `FileStorage`'s in-memory twin for unit tests and simulations: it accepts and refuses the same
/// batches (the checks are shared), recovers by the same rules, and models durability the same way —
/// what `sync()` covered survives `crashed()`, and so do truncations and snapshot installs (which
/// `FileStorage` makes durable at once); unsynced appends and commit-only hard state changes do not.
public final class MemoryStorage: RaftStorage {
  public let options: FileStorageOptions
  private let store: MemorySnapshotStore
  /// The written log: `log[k].index == firstIndex + k`. The log may start above 1 after a reset or
  /// compaction.
  private var log: [LogEntry] = []
  private var firstIndex: UInt64 = 1
  /// How many entries of `log` are durable: always a prefix, because only appends are ever unsynced
  /// (FileStorage syncs a truncation before writing after it).
  private var durableCount = 0
  private var hardState = HardState.initial
  private var durableHardState = HardState.initial
  private var shape = LogShape(floor: .zero)
  private var recovered = false

  public init(options: FileStorageOptions = FileStorageOptions()) {
    self.options = options
    store = MemorySnapshotStore(retention: options.snapshotsRetained)
  }

  public var snapshots: any SnapshotStore { store }

  public var snapshotStore: MemorySnapshotStore { store }

  /// What a restart after a crash (or power loss) finds: only what was durable. Call `recover()` on
  /// the result, as on a reopened `FileStorage`.
  public func crashed() -> MemoryStorage {
    let copy = MemoryStorage(options: options, store: store.copy())
    copy.log = Array(log.prefix(durableCount))
    copy.firstIndex = firstIndex
    copy.durableCount = copy.log.count
    copy.hardState = durableHardState
    copy.durableHardState = durableHardState
    return copy
  }

  private init(options: FileStorageOptions, store: MemorySnapshotStore) {
    self.options = options
    self.store = store
  }

  private var lastIndex: UInt64 { firstIndex + UInt64(log.count) - 1 }

  public func recover() throws(StorageError) -> RecoveredState {
    guard !recovered else { throw .misuse("recover() may be called only once, right after opening") }
    let snapshot = store.newest ?? .empty
    let s = snapshot.index
    let termAtSnapshot = s >= firstIndex && s <= lastIndex ? log[Int(s - firstIndex)].term : nil
    var warnings: [String] = []
    switch RecoveryRules.decide(
      snapshot: snapshot, isFallback: false, walFirst: firstIndex, walLast: lastIndex,
      termAtSnapshot: termAtSnapshot)
    {
    case .unrecoverable(let reason):
      throw .unrecoverable(path: "memory", reason: reason)
    case .resetToSnapshot(let reason):
      warnings.append(reason)
      firstIndex = s + 1
      log = []
    case .keep:
      break
    }
    durableCount = log.count
    let entries = Array(log.drop { $0.index <= s })
    shape = LogShape(floor: snapshot.position, entries: entries)
    recovered = true
    return RecoveredState(
      stored: StoredState(hardState: hardState, snapshot: snapshot, entries: entries),
      snapshot: store.newest, warnings: warnings)
  }

  public func write(_ batch: PersistBatch) throws(StorageError) {
    guard recovered else { throw .misuse("recover() must be called before writing") }
    if let snapshot = batch.snapshot, !store.contains(snapshot) {
      throw .misuse("installing \(snapshot), which was not committed through the snapshot store")
    }
    let truncateFrom = try shape.checking(batch, maxRecordBytes: options.maxRecordBytes)
    if let snapshot = batch.snapshot {
      firstIndex = snapshot.index + 1
      log = []
      durableCount = 0
      shape.reset(to: snapshot.position)
    }
    if let index = truncateFrom {
      log.removeLast(Int(lastIndex + 1 - index))
      shape.truncate(from: index)
      // FileStorage's truncation ends in an fdatasync of the segment it cut, which makes the whole
      // written log up to the cut durable.
      durableCount = log.count
    }
    log.append(contentsOf: batch.entries)
    shape.append(batch.entries)
    if let state = batch.hardState { hardState = state }
  }

  @discardableResult
  public func sync() throws(StorageError) -> LogPosition {
    guard recovered else { throw .misuse("recover() must be called before writing") }
    durableCount = log.count
    // Like HardStateFile: synced only when term or vote changed; a commit-only change is a hint.
    if hardState.term != durableHardState.term || hardState.vote != durableHardState.vote {
      durableHardState = hardState
    }
    return shape.lastPosition
  }

  public func compact(through index: UInt64) throws(StorageError) {
    guard recovered else { throw .misuse("recover() must be called before writing") }
    guard let oldest = store.oldestRetainedIndex else { return }
    let bound = min(index, oldest, shape.lastIndex)
    guard bound > shape.floor.index else { return }
    shape.raiseFloor(to: bound)
    guard bound >= firstIndex else { return }
    let dropped = min(log.count, Int(bound + 1 - firstIndex))
    log.removeFirst(dropped)
    durableCount = max(0, durableCount - dropped)
    firstIndex = bound + 1
  }
}
