import KVStore

/// Why raftdb could not serve a request, in terms of the operation and not of any protocol. Each
/// adapter maps every case in one table (HTTP: `ServiceError+HTTP.swift`); a later gRPC adapter maps
/// them to gRPC codes as etcd does.
public enum ServiceError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The request breaks a rule (an empty key, too many pairs, a malformed address): fix it, do not
  /// retry it.
  case invalidArgument(String)
  /// A key, value or request is larger than its limit.
  case tooLarge(String)
  /// This member is not the leader: ask `leader` instead, or retry later when no leader is known.
  case notLeader(leader: MemberInfo?)
  /// Temporarily unable (no leader, overloaded, leadership transfer, catching up): retry later.
  case unavailable(String)
  /// The outcome is unknown (timed out after proposing, or leadership changed): retry with the same
  /// idempotency key to be sure it applies exactly once.
  case outcomeUnknown(String)
  /// The request conflicts with the cluster's state (a membership clash).
  case conflict(String)
  /// The cluster cannot run the request yet: it needs a newer cluster version than every member
  /// supports (see `ClusterVersion`).
  case failedPrecondition(String)
  case notFound(String)
  /// The member is shutting down or its storage failed.
  case stopped(String)
  /// A result of the wrong kind came back: a bug, reported rather than hidden.
  case internalError(String)
  /// One of etcd's errors from the multi-version store (compacted, future revision, lease not
  /// found, duplicate key, ...), with etcd's message.
  case store(MVCCError)

  public var description: String {
    switch self {
    case .notLeader(let leader): "not the leader (leader: \(leader?.name ?? "unknown"))"
    case .invalidArgument(let why), .tooLarge(let why), .unavailable(let why), .outcomeUnknown(let why),
      .conflict(let why), .failedPrecondition(let why), .notFound(let why), .stopped(let why),
      .internalError(let why):
      why
    case .store(let error): error.description
    }
  }
}
