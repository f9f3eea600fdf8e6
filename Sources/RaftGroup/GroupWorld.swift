import Raft

// The small protocols a `RaftGroup` is written against. The process shell implements them with NIO
// loops, the storage writer thread, TCP and files; the simulator implements them with a simulated
// clock, disk and network. Every method is called on the group's thread, and every completion a
// group is handed must be called back on that thread too (the implementation hops if it works
// elsewhere). Nothing here may block that thread.

/// Monotonic time as the group sees it.
public protocol GroupClock: AnyObject {
  /// Nanoseconds since an arbitrary origin; never goes backwards.
  var nowNanoseconds: UInt64 { get }
}

/// The group's thread: runs work after the current turn, in order.
public protocol GroupExecutor: AnyObject {
  /// Runs `work` later on the group's thread, after the work already queued.
  func execute(_ work: @escaping () -> Void)
  /// Runs `work` on the group's thread once `nanoseconds` have passed.
  func execute(afterNanoseconds nanoseconds: UInt64, _ work: @escaping () -> Void)
}

/// A snapshot received from the leader and held in a staging area until the group persists it.
public protocol StagedSnapshot: AnyObject {
  var metadata: SnapshotMetadata { get }
  /// Throws the staged data away (the core declined it, or the group stopped).
  func abort()
}

/// One `Ready`'s durable part (steps 1 of the `Ready` contract).
public struct GroupWrite {
  public var hardState: HardState?
  public var entries: [LogEntry]
  /// A received snapshot to make durable before the entries (installing it replaces the log).
  public var snapshot: (any StagedSnapshot)?
  /// Whether the write must be fsynced before it completes (false when only the commit changed).
  public var mustSync: Bool
}

/// Stable storage for the log and hard state.
public protocol GroupStorage: AnyObject {
  /// Makes `write` durable, then calls `completion` on the group's thread. Writes complete strictly
  /// in submission order; a failure is final (the group stops).
  func persist(_ write: GroupWrite, completion: @escaping (Result<Void, GroupStorageFailure>) -> Void)
}

public struct GroupStorageFailure: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// Where the group's outbound messages go.
public protocol GroupMessageSink: AnyObject {
  /// Sends ordinary messages (never `installSnapshot`); never blocks, may drop (Raft retries).
  func send(_ messages: [Message])
  /// Streams the stored snapshot `metadata` with `message`; the outcome comes back through
  /// `RaftGroup.reportSnapshot(to:succeeded:)`.
  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata)
}

/// The replicated state machine (hashicorp/raft's FSM seam). Applied on the group's thread only;
/// snapshots are taken from it there and serialized elsewhere by the `GroupSnapshotStore`.
public protocol ReplicatedStateMachine: AnyObject {
  /// What applying a command returns to the proposer.
  associatedtype Output
  /// The index of the last entry applied (or restored from a snapshot).
  var appliedIndex: UInt64 { get }
  /// Applies a committed command. Must be deterministic: every replica returns the same output.
  func apply(_ entry: LogEntry) -> Output
  /// Moves past an entry that carries no command (a leader's no-op or a configuration).
  func advance(past entry: LogEntry)
  /// What applying the command in `entry` (just applied) counts towards the group's byte threshold
  /// for the next snapshot. The default is the entry's size. A machine whose small commands can
  /// drop much of its state (a compaction of history) counts what they dropped as well, so that
  /// the next snapshot, the one a restart loads, soon stops carrying it.
  func snapshotWeight(ofApplied entry: LogEntry) -> Int
}

extension ReplicatedStateMachine {
  public func snapshotWeight(ofApplied entry: LogEntry) -> Int { entry.data.count }
}

/// Durable snapshots of the state machine.
public protocol GroupSnapshotStore<Machine>: AnyObject {
  associatedtype Machine: ReplicatedStateMachine
  /// Saves `machine` as of `metadata` and compacts the stored log through it. Called on the group's
  /// thread: take what is needed from `machine` (an O(1) frozen copy) before returning, and do the
  /// serializing elsewhere. `completion` runs on the group's thread.
  func save(
    _ machine: Machine, at metadata: SnapshotMetadata,
    completion: @escaping (Result<Void, GroupStorageFailure>) -> Void)
  /// Builds a state machine from the stored snapshot `metadata` (made durable by a `GroupWrite`).
  func load(
    _ metadata: SnapshotMetadata, completion: @escaping (Result<Machine, GroupStorageFailure>) -> Void)
}
