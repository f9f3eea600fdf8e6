import Raft

/// Why a group could not carry out a request. Protocol-free: the service layer maps each case to
/// what its clients understand.
public enum GroupError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The core refused the proposal; nothing was appended.
  case proposalRefused(ProposalError)
  /// The read could not be confirmed.
  case readFailed(ReadFailure)
  /// This node is not the leader (`leader` is the one it knows of, if any).
  case notLeader(leader: NodeID?)
  /// The request waited longer than the request timeout: for a proposal the outcome is unknown.
  case timedOut(Waiting)
  /// Leadership changed before the proposal committed: its outcome is unknown.
  case leadershipChanged
  /// A snapshot replaced the log before the proposal's outcome was known: its outcome is unknown.
  case replacedBySnapshot
  /// The group stopped (shutdown or a storage failure) with this reason.
  case stopped(String)

  public enum Waiting: Sendable, Hashable {
    /// A proposal waiting to commit.
    case commit
    /// A read waiting for a quorum to confirm leadership.
    case confirmation
    /// A confirmed read waiting for the state machine to reach its index.
    case apply
  }

  /// Whether a proposal that failed this way may still be applied (the client should retry with the
  /// same idempotency key).
  public var outcomeIsUnknown: Bool {
    switch self {
    case .timedOut(.commit), .leadershipChanged, .replacedBySnapshot: true
    default: false
    }
  }

  public var description: String {
    switch self {
    case .proposalRefused(let error): "\(error)"
    case .readFailed(let failure): "read failed: \(failure)"
    case .notLeader(let leader): "not the leader (leader: \(leader.map { "\($0)" } ?? "unknown"))"
    case .timedOut(let waiting): "timed out waiting for \(waiting)"
    case .leadershipChanged: "leadership changed before the proposal committed"
    case .replacedBySnapshot: "replaced by a snapshot before the outcome was known"
    case .stopped(let reason): reason
    }
  }
}

/// Callbacks to the group's owner, all on the group's thread. Each is optional.
public struct GroupHooks<Machine: ReplicatedStateMachine> {
  /// Role, term or known leader changed.
  public var softStateChanged: ((SoftState) -> Void)?
  /// The newest configuration changed (on append, rollback or snapshot install).
  public var configurationChanged: ((Configuration) -> Void)?
  /// A `Ready` was taken from the core, before the group acts on it (the simulator checks it).
  public var readyTaken: ((Ready) -> Void)?
  /// A batch of committed entries was applied, before the proposers are answered (publish a read
  /// view here so that a client that saw its write succeed reads it back).
  public var applied: ((_ entries: [LogEntry], _ containedCommands: Bool) -> Void)?
  /// The state machine was replaced by one loaded from a received snapshot.
  public var machineRestored: ((Machine, SnapshotMetadata) -> Void)?
  /// A snapshot of this node's own state machine was saved and the log compacted through it.
  public var snapshotSaved: ((SnapshotMetadata) -> Void)?
  /// The group finished a turn of its Ready loop.
  public var turnFinished: (() -> Void)?
  /// The group stopped for good after an unrecoverable error.
  public var failed: ((String) -> Void)?

  public init() {}
}
