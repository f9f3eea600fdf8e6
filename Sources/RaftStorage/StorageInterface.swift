import Raft

/// Why storage refused to do something. Every case names what was wrong and where, so an operator can
/// act on it; none of them is ever swallowed.
public enum StorageError: Error, Sendable, CustomStringConvertible {
  /// A checksum or structural check failed where data should be intact (not a torn tail).
  case corruption(file: String, offset: Int64, reason: String)
  /// A system call failed.
  case io(operation: String, path: String, errno: Int32)
  /// The disk is full. Nothing already durable was harmed.
  case noSpace(path: String)
  /// The data directory was written by a newer (or unknown) format version.
  case unsupportedFormat(path: String, found: String, supported: Int)
  /// An earlier write or fsync failed; the store refuses further writes until reopened, because the
  /// state of unsynced data after a failed fsync is unknown.
  case failed(cause: String)
  /// What is on disk cannot be assembled into a log (for example the WAL does not reach back to the
  /// newest usable snapshot).
  case unrecoverable(path: String, reason: String)
  /// A caller broke the storage contract (for example appending with a gap).
  case misuse(String)

  public var description: String {
    switch self {
    case .corruption(let file, let offset, let reason): "corruption in \(file) at offset \(offset): \(reason)"
    case .io(let operation, let path, let errno): "\(operation) failed on \(path): errno \(errno)"
    case .noSpace(let path): "no space left on device writing \(path)"
    case .unsupportedFormat(let path, let found, let supported):
      "\(path) has data format \(found); this build supports format \(supported) — use a newer raftdb"
    case .failed(let cause): "storage stopped after an earlier failure: \(cause)"
    case .unrecoverable(let path, let reason): "cannot recover \(path): \(reason)"
    case .misuse(let what): "storage misuse: \(what)"
    }
  }
}

/// What a `Ready` asks storage to make durable, in the order it must be applied: install `snapshot`
/// (resetting the log to it), append `entries` (dropping any stored suffix from the first entry's index),
/// then save `hardState`.
public struct PersistBatch: Sendable {
  public var snapshot: SnapshotMetadata?
  public var entries: [LogEntry]
  public var hardState: HardState?

  public init(snapshot: SnapshotMetadata? = nil, entries: [LogEntry] = [], hardState: HardState? = nil) {
    self.snapshot = snapshot
    self.entries = entries
    self.hardState = hardState
  }

  public init(_ ready: Ready) {
    self.init(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
  }

  public var isEmpty: Bool { snapshot == nil && entries.isEmpty && hardState == nil }
}

/// Everything a node needs to start: the state for `RaftNode(options:stored:)`, and the snapshot to
/// rebuild the state machine from.
public struct RecoveredState: Sendable {
  public var stored: StoredState
  /// The snapshot the state machine starts from (nil: start empty, replay the log from index 1).
  public var snapshot: SnapshotMetadata?
  /// Things recovery repaired or skipped (a torn tail truncated, a bad snapshot passed over), for the
  /// log. Recovery never repairs silently.
  public var warnings: [String]

  public init(stored: StoredState, snapshot: SnapshotMetadata?, warnings: [String]) {
    self.stored = stored
    self.snapshot = snapshot
    self.warnings = warnings
  }
}

/// A node's stable storage: the write-ahead log, the hard state and the snapshots. `FileStorage` keeps
/// them in a data directory; `MemoryStorage` is its twin for unit tests and the simulator.
///
/// Not thread-safe: one owner calls it (the server gives it a dedicated writer thread).
public protocol RaftStorage: AnyObject {
  /// Reads back what is durable. Called once, right after opening.
  func recover() throws(StorageError) -> RecoveredState

  /// Applies a batch (see `PersistBatch` for the order). Written, not yet necessarily durable,
  /// except that installing a snapshot and truncating a suffix are made durable before anything is
  /// written after them (so that no stale record can ever reappear after a crash).
  func write(_ batch: PersistBatch) throws(StorageError)

  /// Makes everything written so far durable: one fsync for any number of batches (group commit).
  /// Returns the last log position now durable.
  @discardableResult
  func sync() throws(StorageError) -> LogPosition

  /// After a local snapshot through `index` was saved: drops what no retained snapshot needs (WAL
  /// segments wholly below the oldest retained snapshot).
  func compact(through index: UInt64) throws(StorageError)

  var snapshots: any SnapshotStore { get }
}

/// Snapshot files: one per snapshot, with a header (index, term, configuration) and a checksum.
public protocol SnapshotStore: AnyObject {
  /// Starts writing a snapshot, either taken locally or being received from the leader. Nothing is
  /// visible until the sink is committed.
  func beginWrite(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSink

  /// Opens a stored snapshot for reading (to restore the state machine or to send to a follower).
  /// The checksum is verified when the last chunk is read.
  func open(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSource

  /// The newest snapshot that is stored and passed its checksum at recovery.
  var newest: SnapshotMetadata? { get }
}

public protocol SnapshotSink: AnyObject {
  func write(_ chunk: [UInt8]) throws(StorageError)
  /// Makes the snapshot durable (fsync, atomic rename, directory fsync) and visible, then removes
  /// snapshots beyond the retention count.
  func commit() throws(StorageError)
  /// Throws away a partly written or unwanted snapshot.
  func abort()
}

public protocol SnapshotSource: AnyObject {
  var metadata: SnapshotMetadata { get }
  /// Size of the state-machine data in bytes.
  var dataSize: Int64 { get }
  /// The next chunk of state-machine data, or nil at the end (after verifying the checksum).
  func read(maxBytes: Int) throws(StorageError) -> [UInt8]?
  func close()
}
