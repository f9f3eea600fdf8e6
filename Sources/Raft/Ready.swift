/// Everything the node wants done since the last `takeReady()`, handed over as data.
///
/// ## The contract (what must be durable before what is sent)
/// The caller handles successive `Ready` values strictly in order:
/// 1. Write `snapshot` (if any), then `entries` (the first entry's index may be at or below the
///    last stored index: drop the stored suffix from there first), then `hardState`, and make them
///    durable (fsync). Writes of consecutive `Ready`s may be pipelined but must become durable in order.
///    After a crash, any prefix of the unsynced writes may have survived, and the hard state may be
///    newer than the entries — but a snapshot install and a suffix truncation must be durable before
///    anything written after them, or a restored commit index could cover a stale entry.
/// 2. `messages` may be sent at once, in parallel with step 1: they are the leader's appends and
///    heartbeats, which the thesis (§10.2.1) allows before the leader's own write completes, because
///    the leader counts itself toward a quorum only once `persisted(through:)` says so.
/// 3. `messagesAfterPersist` must be sent only after step 1 (for this and every earlier `Ready`) is
///    durable: they are vote grants and append acknowledgements, which promise durable state.
/// 4. Then call `persisted(through: persistedThrough)` if it is not nil.
/// 5. `committedEntries` may be applied at once: they are committed and already locally durable.
///    Entries of kind `.noop` carry nothing; `.configuration` entries are informational (the core
///    has already switched configuration when it appended them).
/// 6. `readStates` answer `requestRead` calls: serve each read once the state machine has applied
///    through its index.
public struct Ready: Sendable {
  /// Non-nil when term, vote or commit changed; persist it.
  public var hardState: HardState?
  /// A snapshot received from the leader that must replace the state machine and the stored log.
  public var snapshot: SnapshotMetadata?
  /// Entries to append to stable storage.
  public var entries: [LogEntry] = []
  public var messages: [Message] = []
  public var messagesAfterPersist: [Message] = []
  public var committedEntries: [LogEntry] = []
  public var readStates: [ReadState] = []
  /// Whether step 1 needs an fsync. False when only the commit index changed: it is a hint that
  /// may be written lazily, since a restarted node relearns it from the leader.
  public var mustSync = false
  /// The position to report through `persisted(through:)` once this `Ready` is durable.
  public var persistedThrough: LogPosition?
  /// Set when role, term or known leader changed.
  public var softState: SoftState?
  /// The newest configuration, set when it changed (on append, on rollback or on snapshot install).
  public var configuration: Configuration?

  public init() {}

  /// Whether step 1 of the contract has anything to write.
  public var needsPersistence: Bool { hardState != nil || snapshot != nil || !entries.isEmpty }

  public var isEmpty: Bool {
    !needsPersistence && messages.isEmpty && messagesAfterPersist.isEmpty && committedEntries.isEmpty
      && readStates.isEmpty && softState == nil && configuration == nil && persistedThrough == nil
  }
}

/// Volatile state worth reporting to the application when it changes.
public struct SoftState: Hashable, Sendable, CustomStringConvertible {
  public var role: Role
  public var term: UInt64
  public var leader: NodeID?

  public init(role: Role, term: UInt64, leader: NodeID?) {
    self.role = role
    self.term = term
    self.leader = leader
  }

  public var description: String { "\(role) t\(term) leader=\(leader.map { "\($0)" } ?? "-")" }
}

public enum Role: String, Sendable, Hashable {
  case follower
  case preCandidate
  case candidate
  case leader
}

/// How a read is confirmed before it is answered.
public enum ReadMode: UInt8, Sendable, Hashable {
  /// ReadIndex (thesis §6.4): the leader confirms with a quorum heartbeat round. Linearizable.
  case readIndex = 0
  /// Leader lease (thesis §6.4.1): answered at once while the leader holds a lease won from its
  /// last quorum round. Linearizable only if clocks drift by less than the lease safety margin;
  /// without a valid lease the read falls back to a ReadIndex round.
  case lease = 1
}

/// The outcome of a read request.
public enum ReadResult: Sendable, Hashable, CustomStringConvertible {
  /// Serve the read once the state machine has applied through `index`.
  case ready(index: UInt64)
  case failed(ReadFailure)

  public var description: String {
    switch self {
    case .ready(let index): "ready(\(index))"
    case .failed(let failure): "failed(\(failure))"
    }
  }
}

public enum ReadFailure: UInt8, Error, Sendable, Hashable {
  /// There is no known leader to confirm the read.
  case noLeader = 1
  /// Leadership changed or was lost before the read was confirmed; the client should retry.
  case leadershipLost = 2
  /// Too many reads are waiting already (bounded by `RaftOptions.maxPendingReads`).
  case overloaded = 3
}

public struct ReadState: Sendable, Hashable {
  public var requestID: UInt64
  public var result: ReadResult

  public init(requestID: UInt64, result: ReadResult) {
    self.requestID = requestID
    self.result = result
  }
}

/// Why a proposal was not appended. Nothing was changed in any of these cases.
public enum ProposalError: Error, Sendable, Hashable, CustomStringConvertible {
  /// Only the leader appends; `leader` is the leader this node knows of, if any.
  case notLeader(leader: NodeID?)
  /// Proposals pause while leadership is handed to `target`.
  case leadershipTransferInProgress(target: NodeID)
  /// The uncommitted tail of the log exceeds `RaftOptions.maxUncommittedBytes`.
  case overloaded
  /// A membership change must wait for the new leader's first entry to commit (lesson 09).
  case leaderNotReady
  /// Another membership change is still uncommitted.
  case configurationChangePending
  case invalidConfigurationChange(ConfigurationChangeError)
  /// A single proposal larger than `RaftOptions.maxMessageBytes` could never be replicated.
  case entryTooLarge(bytes: Int, limit: Int)

  public var description: String {
    switch self {
    case .notLeader(let leader): "not the leader (leader: \(leader.map { "\($0)" } ?? "unknown"))"
    case .leadershipTransferInProgress(let target): "leadership transfer to \(target) in progress"
    case .overloaded: "too many uncommitted entries"
    case .leaderNotReady: "leader has not yet committed an entry in its term"
    case .configurationChangePending: "another configuration change is pending"
    case .invalidConfigurationChange(let error): "invalid configuration change: \(error)"
    case .entryTooLarge(let bytes, let limit): "entry of \(bytes) bytes exceeds the \(limit)-byte limit"
    }
  }
}

public enum LeadershipTransferError: Error, Sendable, Hashable {
  case notLeader(leader: NodeID?)
  case notAVoter(NodeID)
  case alreadyLeader
}

/// A point-in-time view for operators (`/status`) and tests.
public struct RaftStatus: Sendable, Hashable {
  public var id: NodeID
  public var role: Role
  public var term: UInt64
  public var vote: NodeID?
  public var leader: NodeID?
  public var commitIndex: UInt64
  public var appliedIndex: UInt64
  public var persistedIndex: UInt64
  public var firstIndex: UInt64
  public var lastIndex: UInt64
  public var snapshotIndex: UInt64
  public var configuration: Configuration
  public var isLearner: Bool
  public var leadershipTransferTarget: NodeID?
  /// The leader's view of each follower; empty on other roles.
  public var followers: [FollowerStatus]
}

public struct FollowerStatus: Sendable, Hashable {
  public var id: NodeID
  public var matchIndex: UInt64
  public var nextIndex: UInt64
  public var state: String
  public var inflightMessages: Int
  public var recentlyActive: Bool
}
